mod agent_loop;
mod mcp;
mod model;
mod tools;
