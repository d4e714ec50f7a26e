# verdictd default attestation policy: Intel TDX trust domains (DCAP quotes v4/v5).
#
# input: {"tee": "tdx", "tcb_status": <Intel TCB status or null>, <every flat claim of the TDX verifier>}
#        (mrtd, rtmr0..rtmr3, mrconfigid, mrowner, ...: lower-case hex; debug: bool, the TD attribute)
# data.reference: {<name>: [<accepted values>]} -- the reference values in force (expired ones are absent)
#
# Result (package policy): allow (bool), tier ("affirming" | "warning" | "contraindicated" | "none"),
# reasons (set of strings: every reason the evidence is refused or not affirmed).
#
# Reference values read:
#   mrtd                 accepted TD build measurements; required (no reference: deny)
#   rtmr0..rtmr3, mrconfigid, mrowner, mrownerconfig, mrseam, mrsignerseam
#                        accepted values, checked only where set
#
# Fail closed: a required reference value that is missing denies with tier "none". To accept any value of a
# claim explicitly, copy this policy, name the claim in accept_any (e.g. accept_any := {"mrtd"}) and store
# the copy under this TEE's policy name.

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

claim(name) := object.get(input, name, null)

# --- the evidence is TDX and not a debug TD

deny contains sprintf("tee %v: this policy appraises tdx evidence", [object.get(input, "tee", null)]) if {
	not input.tee == "tdx"
}

deny contains "debug TD (TD attribute DEBUG set, or no debug claim)" if {
	not input.debug == false
}

# --- measurements

missing contains "no reference value for mrtd" if {
	not referenced("mrtd")
}

deny contains sprintf("%s %v is not a reference value", [name, claim(name)]) if {
	some name in ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mrconfigid", "mrowner", "mrownerconfig", "mrseam", "mrsignerseam"]
	referenced(name)
	not matches(name)
}

# --- platform TCB (Intel's status for the platform, TDX module and QE)

tcb_warning := {"SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded"}

warn contains sprintf("TCB status %s", [input.tcb_status]) if {
	input.tcb_status in tcb_warning
}

deny contains sprintf("TCB status %v is not acceptable", [object.get(input, "tcb_status", null)]) if {
	not input.tcb_status == "UpToDate"
	not input.tcb_status in tcb_warning
}
