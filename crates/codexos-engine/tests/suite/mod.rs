mod model;
mod tools;
