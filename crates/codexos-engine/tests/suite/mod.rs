mod mcp;
mod model;
mod tools;
