# verdictd default attestation policy: AMD SEV-SNP guests (attestation reports signed by a VCEK or VLEK).
#
# input: {"tee": "snp", "tcb_status": <"UpToDate" | "OutOfDate" | null>, <every flat claim of the SNP verifier>}
#        (measurement, host_data: lower-case hex; debug: bool, the guest policy's DEBUG bit;
#         reported_tcb_bootloader/_tee/_snp/_microcode(/_fmc), guest_svn, vmpl: ints)
# data.reference: {<name>: [<accepted values>]} -- the reference values in force (expired ones are absent)
#
# Result (package policy): allow (bool), tier ("affirming" | "warning" | "contraindicated" | "none"),
# reasons (set of strings: every reason the evidence is refused or not affirmed).
#
# Reference values read:
#   measurement          accepted launch measurements; required (no reference: deny)
#   host_data, family_id, image_id, id_key_digest, author_key_digest, vmpl
#                        accepted values, checked only where set
#   reported_tcb_bootloader, reported_tcb_tee, reported_tcb_snp, reported_tcb_microcode, reported_tcb_fmc,
#   guest_svn            minimums, checked only where set: the claim >= the smallest listed value
#
# Fail closed: a required reference value that is missing denies with tier "none". To accept any value of a
# claim explicitly, copy this policy, name the claim in accept_any (e.g. accept_any := {"measurement"}) and
# store the copy under this TEE's policy name.

package policy

import rego.v1

accept_any := set()

default allow := false

allow if {
	count(deny) == 0
	count(missing) == 0
}

reasons := deny | missing

default tier := "none"

tier := "affirming" if {
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

at_least(name) if name in accept_any

at_least(name) if {
	some v in data.reference[name]
	is_number(v)
	is_number(input[name])
	input[name] >= v
}

claim(name) := object.get(input, name, null)

# --- the evidence is SNP and not a debuggable guest

deny contains sprintf("tee %v: this policy appraises snp evidence", [object.get(input, "tee", null)]) if {
	not input.tee == "snp"
}

deny contains "debug guest (guest policy DEBUG bit set, or no debug claim)" if {
	not input.debug == false
}

# --- measurements

missing contains "no reference value for measurement" if {
	not referenced("measurement")
}

deny contains sprintf("%s %v is not a reference value", [name, claim(name)]) if {
	some name in ["measurement", "host_data", "family_id", "image_id", "id_key_digest", "author_key_digest", "vmpl"]
	referenced(name)
	not matches(name)
}

# --- TCB: the reported TCB against the owner's minimums, and the VCEK's TCB status

deny contains sprintf("%s %v is below the reference minimum", [name, claim(name)]) if {
	some name in [
		"reported_tcb_bootloader", "reported_tcb_tee", "reported_tcb_snp", "reported_tcb_microcode",
		"reported_tcb_fmc", "guest_svn",
	]
	data.reference[name]
	not at_least(name)
}

deny contains sprintf("TCB status %v is not acceptable", [object.get(input, "tcb_status", null)]) if {
	not input.tcb_status == "UpToDate"
}
