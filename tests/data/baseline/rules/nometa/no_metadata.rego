package immutrail.rules.no_metadata

import rego.v1

deny contains "always" if true
