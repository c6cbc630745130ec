"""AutoLRS: per-stage Bayesian search over the LR with loss forecasting."""
