"""Progressive delivery: rollouts of a candidate version on a deployment."""
