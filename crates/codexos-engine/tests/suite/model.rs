//! Model providers against a fake model server speaking their wire formats.
