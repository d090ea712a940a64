"""The step runner: claims initializations, executes their steps, survives crashes."""
