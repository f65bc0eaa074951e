# A user rule: network download tools have no place in a running immutable instance.
package immutrail.rules.no_network_tools

import data.immutrail.lib.paths
import rego.v1

metadata := {
	"id": "ACME-NET-001",
	"title": "No download tools in the image",
	"severity": "medium",
	"rationale": "curl and wget let an attacker fetch a second stage.",
	"remediation": "Remove curl and wget from the final image.",
	"controls": ["ACME SEC-12"],
}

tools := {"curl", "wget"}

deny contains {"msg": sprintf("%s is installed", [f.path]), "path": f.path, "layer": f.layer} if {
	some f in input.files
	paths.under(f.path, "/usr/bin")
	some tool in tools
	endswith(f.path, concat("", ["/", tool]))
}
