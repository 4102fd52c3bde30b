"""Test doubles that ship with infscale: fake generators, oracle scorers, a fake OpenAI server."""

from .fakes import FakeGenerator, FakePotential, FakeStepModel, OracleScorer, answer_model

__all__ = ["FakeGenerator", "FakePotential", "FakeStepModel", "OracleScorer", "answer_model"]
