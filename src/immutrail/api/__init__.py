"""`immutrail serve`: the HTTP API over the ledger, the image store and the auditor's queries."""
