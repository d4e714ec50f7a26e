# verdictd default attestation policy: the SIMULATED SGX platform (inclavare.sim).
#
# The simulated platform protects nothing: its keys are files on the host, anyone who can read them forges its
# quotes. verdictd appraises sim evidence only when the server was told to trust the sim platform (never by
# default), and this policy never affirms it: the best tier is "warning" (verdictd also caps it there).
#
# input: {"tee": "sim", "tcb_status": <the sim collateral's status or null>, <the SGX verifier's flat claims>}
#        (mrenclave, mrsigner: lower-case hex; isvprodid, isvsvn: ints; debug: bool; ...)
# data.reference: {<name>: [<accepted values>]} -- the reference values in force (expired ones are absent)
#
# Result (package policy): allow (bool), tier ("warning" | "contraindicated" | "none"),
# reasons (set of strings: every reason the evidence is refused or not affirmed).
#
# Reference values read: as the sgx policy (mrenclave and/or mrsigner required; isvprodid required when
# mrenclave is not pinned; isvsvn minimum; configid, isvfamilyid, isvextprodid where set).
#
# Fail closed: a required reference value that is missing denies with tier "none". To accept any value of a
# claim explicitly, copy this policy, name the claim in accept_any (e.g. accept_any := {"mrenclave"}) and
# store the copy under this TEE's policy name.

package policy

import rego.v1

accept_any := set()

default allow := false

allow if {
	count(deny) == 0
	count(missing) == 0
}

reasons := (deny | missing) | warn

default tier := "none"

tier := "affirming" if {
	allow
	count(warn) == 0
} else := "warning" if {
	allow
} else := "contraindicated" if {
	count(deny) > 0
}

# --- helpers

referenced(name) if data.reference[name]

referenced(name) if name in accept_any

# reference hex values are lower-case (the reference value store normalises them); a claim matches in any case
matches(name) if name in accept_any

matches(name) if input[name] in data.reference[name]

matches(name) if {
	is_string(input[name])
	lower(input[name]) in data.reference[name]
}

at_least(name) if {
	some v in data.reference[name]
	is_number(v)
	is_number(input[name])
	input[name] >= v
}

claim(name) := object.get(input, name, null)

# --- the evidence is from the simulated platform and not a debug enclave

warn contains "simulated platform: no hardware protection"

deny contains sprintf("tee %v: this policy appraises sim evidence", [object.get(input, "tee", null)]) if {
	not input.tee == "sim"
}

deny contains "debug enclave (attributes DEBUG set, or no debug claim)" if {
	not input.debug == false
}

# --- identity

missing contains "no reference value for mrenclave or mrsigner" if {
	not referenced("mrenclave")
	not referenced("mrsigner")
}

pinned_by_mrenclave if {
	data.reference.mrenclave
	not "mrenclave" in accept_any
}

missing contains "no reference value for isvprodid (required when mrenclave is not pinned)" if {
	not pinned_by_mrenclave
	referenced("mrsigner")
	not referenced("isvprodid")
}

deny contains sprintf("%s %v is not a reference value", [name, claim(name)]) if {
	some name in ["mrenclave", "mrsigner", "isvprodid", "configid", "isvfamilyid", "isvextprodid"]
	referenced(name)
	not matches(name)
}

deny contains sprintf("isvsvn %v is below the reference minimum", [claim("isvsvn")]) if {
	data.reference.isvsvn
	not "isvsvn" in accept_any
	not at_least("isvsvn")
}

# --- platform TCB (the sim collateral's status)

tcb_warning := {"SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"}

warn contains sprintf("TCB status %s", [input.tcb_status]) if {
	input.tcb_status in tcb_warning
}

deny contains sprintf("TCB status %v is not acceptable", [object.get(input, "tcb_status", null)]) if {
	not input.tcb_status == "UpToDate"
	not input.tcb_status in tcb_warning
}
