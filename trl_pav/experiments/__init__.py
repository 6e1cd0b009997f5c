"""Small experiment runners the demo and benchmarks call (each returns plain data, writes nothing it keeps)."""

from .planted_ppo import AccuracyCurveCallback, iterations_to_reach, run_planted_ppo

__all__ = ["AccuracyCurveCallback", "iterations_to_reach", "run_planted_ppo"]
