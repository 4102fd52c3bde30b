"""Test doubles that ship with infscale: fake generators, oracle scorers, a fake OpenAI server."""

from .fakes import FakeGenerator, OracleScorer, answer_model

__all__ = ["FakeGenerator", "OracleScorer", "answer_model"]
