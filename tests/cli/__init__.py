"""The CLI, chat-ops and the client module: input, refusals, the local stack."""
