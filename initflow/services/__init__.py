"""Services: the side-effecting building blocks (templates, git) that steps compose."""
