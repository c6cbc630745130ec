"""Search strategies: AutoLRS, population-based training and HDET, as pure decision objects plus runners."""
