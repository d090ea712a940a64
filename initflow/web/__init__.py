"""HTTP surface: the GraphQL endpoint, git clone URLs, health."""
