"""Microsoft.ManagedIdentity: user-assigned managed identities, each backed by a principal of the
emulated directory."""
