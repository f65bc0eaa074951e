package immutrail.rules.old_style

metadata := {"id": "ACME-V0", "title": "written for Rego v0", "severity": "high"}

deny[msg] {
	input.config.user == ""
	msg := "runs as root"
}
