# verdictd default attestation policy: Trustee's SAMPLE evidence.
#
# The sample "TEE" protects nothing: its evidence is unsigned JSON that any program can write. All it shows is
# that the client echoed this session's runtime-data hash. verdictd appraises it only when the server was told
# to trust the simulated platform (never by default), and this policy never affirms it: the best tier is
# "warning" (verdictd also caps it there), so the default key policy never unwraps for it. Use it to test flows.
#
# input: {"tee": "sample", "tcb_status": null, <Trustee's sample claims>}:
#        svn (string, "1" from Trustee's sample attester), report_data (base64), launch_digest ("abcde"),
#        platform_version {"major": 1, "minor": 4}, debug (false)
# data.reference: {<name>: [<accepted values>]} -- the reference values in force (expired ones are absent)
#
# Result (package policy): allow (bool), tier ("warning" | "contraindicated" | "none"),
# reasons (set of strings: every reason the evidence is refused or not affirmed).
#
# Reference values read (as Trustee's default EAR policy reads them for sample):
#   svn (required): accepted SVNs as integers; the claim's decimal string must be one of them
#   major_version (where set): platform_version.major must equal one of them
#   minimum_minor_version (where set): platform_version.minor must be at least one of them
# (launch_digest is a constant of the sample verifier; reference values are hex or integers, so it is not read.)
#
# Fail closed: a missing svn reference value denies with tier "none".

package policy

import rego.v1

default allow := false

allow if {
	count(deny) == 0
	count(missing) == 0
}

reasons := (deny | missing) | warn

default tier := "none"

tier := "warning" if {
	allow
} else := "contraindicated" if {
	count(deny) > 0
}

warn contains "sample evidence: unsigned, no hardware protection"

deny contains sprintf("tee %v: this policy appraises sample evidence", [object.get(input, "tee", null)]) if {
	not input.tee == "sample"
}

deny contains "debug platform (debug is not false)" if {
	not input.debug == false
}

missing contains "no reference value for svn" if {
	not data.reference.svn
}

svn_number := to_number(input.svn) if {
	is_string(input.svn)
	regex.match(`^[0-9]{1,19}$`, input.svn)
}

deny contains sprintf("svn %v is not a reference value", [object.get(input, "svn", null)]) if {
	data.reference.svn
	not svn_number in data.reference.svn
}

deny contains sprintf("platform_version.major %v is not a reference value", [major]) if {
	data.reference.major_version
	major := object.get(input, ["platform_version", "major"], null)
	not major in data.reference.major_version
}

minor_ok if {
	some v in data.reference.minimum_minor_version
	is_number(input.platform_version.minor)
	input.platform_version.minor >= v
}

deny contains sprintf("platform_version.minor %v is below the reference minimum", [minor]) if {
	data.reference.minimum_minor_version
	minor := object.get(input, ["platform_version", "minor"], null)
	not minor_ok
}
