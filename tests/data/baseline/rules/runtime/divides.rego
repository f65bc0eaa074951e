package immutrail.rules.divides

import rego.v1

metadata := {"id": "ACME-DIV", "title": "divides by zero", "severity": "low"}

deny contains msg if {
	ratio := count(input.files) / 0
	msg := sprintf("%v", [ratio])
}
