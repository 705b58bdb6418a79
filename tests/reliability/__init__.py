"""The reliability suite (`make reliability`): real faults injected, figures reported."""
