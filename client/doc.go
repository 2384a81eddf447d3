// Package client is the one Go client of the coordinator's HTTPS API, used
// by the agent, the CLI and the UI. Its types are wire's; an answer other
// than 2xx is an *Error whose Code callers branch on.
package client
