package immutrail.rules.broken

import rego.v1

metadata := {"id": "ACME-BROKEN", "title": "broken", "severity": "low"}

deny contains msg if {
	input.config.user ==
	msg := "never"
}
