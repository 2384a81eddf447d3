package wire

// Error is the body of every non-2xx answer of the API.
type Error struct {
	// Code says what went wrong, for a program: one of the Code
	// constants. Programs branch on it, never on the message. Empty: a
	// coordinator from before codes (2026-12-03), or the agent's local API.
	Code ErrorCode `json:"code,omitempty"`
	// Error says what went wrong, for a person. Its text may change from
	// one release to the next.
	Error string `json:"error"`
	// Detail carries structured detail, such as a position. Nil: none.
	Detail any `json:"detail,omitempty"`
}

// ProtocolRefusal is the Detail of a CodeProtocolTooOld or
// CodeProtocolTooNew answer.
type ProtocolRefusal struct {
	// Agent is the protocol version the agent sent (0: none).
	Agent int `json:"agent"`
	// Min and Max are the agent protocols the coordinator accepts.
	Min int `json:"min"`
	Max int `json:"max"`
	// CoordinatorVersion is the coordinator's wiremesh version, an agent
	// version that works with it. Empty: not known.
	CoordinatorVersion string `json:"coordinator_version,omitempty"`
}

// ErrorCode is the stable, machine-readable kind of an API error. A code
// keeps its meaning across releases; new codes may be added, so a client
// treats one it does not know by the HTTP status alone.
type ErrorCode string

// The codes of the coordinator's errors, with the HTTP status each comes
// with.
const (
	// CodeBadRequest (400): the request is malformed or a value is out of
	// range; the message says which and where.
	CodeBadRequest ErrorCode = "bad_request"
	// CodePolicyInvalid (400): a policy does not parse or its tests fail;
	// Detail is a []PolicyError.
	CodePolicyInvalid ErrorCode = "policy_invalid"
	// CodeProtocolTooOld (400): the agent's ProtocolVersion is below
	// MinProtocolVersion; the message names the versions to run.
	CodeProtocolTooOld ErrorCode = "protocol_too_old"
	// CodeProtocolTooNew (400): the agent's ProtocolVersion is above the
	// coordinator's; upgrade the coordinator first.
	CodeProtocolTooNew ErrorCode = "protocol_too_new"
	// CodeUnauthorized (401): no token, or a token, join key or node
	// credential the coordinator does not know (a deleted node's, say).
	CodeUnauthorized ErrorCode = "unauthorized"
	// CodeExpired (401): a join key or node past its expiry; an expired
	// node must enroll again.
	CodeExpired ErrorCode = "expired"
	// CodeRevoked (401): a revoked join key.
	CodeRevoked ErrorCode = "revoked"
	// CodeKeyUsed (401): a one-time join key that already admitted a node.
	CodeKeyUsed ErrorCode = "key_used"
	// CodeForbidden (403): a valid credential of the wrong kind, such as a
	// node credential on the admin API.
	CodeForbidden ErrorCode = "forbidden"
	// CodeKeyMismatch (403): the public key in the request is not the one
	// the node credential belongs to (a key rotation the agent did not
	// finish, or a stolen credential).
	CodeKeyMismatch ErrorCode = "key_mismatch"
	// CodeProofInvalid (403): the proof of the node's private key is
	// missing or wrong (or made for another coordinator proof key).
	CodeProofInvalid ErrorCode = "proof_invalid"
	// CodeProofTime (403): a valid proof made at a time the coordinator
	// refuses: the node's clock is off, or the proof is older than one
	// already used.
	CodeProofTime ErrorCode = "proof_time"
	// CodeNotFound (404): no such endpoint or object.
	CodeNotFound ErrorCode = "not_found"
	// CodeConflict (409): the change conflicts with the state, such as a
	// name already taken.
	CodeConflict ErrorCode = "conflict"
	// CodeAlreadyEnrolled (409): an enrollment of a public key that is
	// already a node's. An agent whose earlier attempt may have enrolled
	// it (the answer was lost) asks again with a proof of its key
	// (EnrollRequest.Proof).
	CodeAlreadyEnrolled ErrorCode = "already_enrolled"
	// CodeTooLarge (413): the body is larger than the limit.
	CodeTooLarge ErrorCode = "too_large"
	// CodeRateLimited (429): too many attempts; Retry-After says when to
	// try again.
	CodeRateLimited ErrorCode = "rate_limited"
	// CodeInternal (500): the coordinator failed; its log says why.
	CodeInternal ErrorCode = "internal"
	// CodeUnavailable (503): the coordinator could not finish the request
	// now (it is shutting down, say); try again, here or at another one.
	CodeUnavailable ErrorCode = "unavailable"
)
