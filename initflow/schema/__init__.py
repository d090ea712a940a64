"""The GraphQL schema (Strawberry): types, inputs, context and the root operations."""
