//! Built-in tools, in process and in the sandbox.
