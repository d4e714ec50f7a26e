# verdictd default key policy for the ocicrypt key provider (keyunwrap).
#
# Decides whether an attested caller may have a layer key unwrapped with store key data.kid.
#
# input: the caller's EAR attestation token claims, as the resource policy sees them:
#   {"submods": {<tee>: {"ear.status": ..., "ear.veraison.annotated-evidence": {<the verifier's flat claims>}}}}
# data: {"plugin": "keyprovider", "resource-path": <key id>, "query": {}}
#
# This default lets a caller unwrap with any key once every submodule of its token is "affirming" (the key
# provider also refuses any other tier unless configured otherwise). Store a policy named "keyprovider" to
# narrow it, e.g. per key id and mrenclave.

package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "keyprovider"
	count(input.submods) > 0
	every submod in input.submods {
		submod["ear.status"] == "affirming"
	}
}
