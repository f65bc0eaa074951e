package immutrail.rules.app_ownership

import rego.v1

metadata := {
	"id": "ACME-OWN-002",
	"title": "Application files are not owned by root",
	"severity": "high",
}

deny contains {"msg": "application file owned by root", "path": f.path, "layer": f.layer} if {
	some f in input.files
	startswith(f.path, "/opt/app/")
	f.type == "file"
	f.uid == 0
}

deny contains "the image runs as root" if input.config.user == ""
