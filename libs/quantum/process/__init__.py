"""Processes: the supervisor that runs services as children (``quantumctl up``, the replay)
and what ties a child's life to its parent. Library code below both the CLI and the replay."""
