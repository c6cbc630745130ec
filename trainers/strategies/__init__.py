"""Search strategies: AutoLRS, population-based training and HDET.

Each is a pure decision object plus a runner that carries its decisions out.
"""
