package immutrail.lib.paths

import rego.v1

under(path, folder) if startswith(path, concat("", [folder, "/"]))
