"""Population-based training: a population of members that copy and perturb each other."""
