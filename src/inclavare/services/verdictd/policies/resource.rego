# verdictd default resource policy (Trustee KBS convention: package policy, data.policy.allow).
#
# Decides whether an attested client may read a KBS resource.
#
# input: the claims of the client's EAR attestation token, as verdictd issued and verified it:
#   {"eat_profile": ..., "iat": ..., "ear.verifier-id": {...},
#    "submods": {<name>: {"ear.status": "affirming" | "warning" | "contraindicated" | "none",
#                         "ear.trustworthiness-vector": {...},
#                         "ear.veraison.annotated-evidence": {<tee>: {<the verifier's flat claims>}}}}}
# data: {"plugin": "resource", "resource-path": "<repo>/<type>/<tag>", "query": {<URL query parameters>}}
#
# This default lets a client read any resource once every submodule of its token is "affirming" or
# "warning" (the attestation policy allowed it). A per-path policy adds conditions on data["resource-path"]
# and on the annotated evidence, e.g.
#   allow if {
#       data["resource-path"] == "myrepo/key/prod"
#       some s in input.submods
#       s["ear.status"] == "affirming"
#   }

package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	count(input.submods) > 0
	every submod in input.submods {
		submod["ear.status"] in {"affirming", "warning"}
	}
}
