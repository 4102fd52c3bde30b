"""Test doubles that ship with infscale: fake generators, oracle scorers, a fake OpenAI server."""

from .fakes import (FakeGenerator, FakeHandle, FakePotential, FakeStepModel, ForkingFakeGenerator, OracleScorer,
                    answer_model, flat_confidence, record_requests)

__all__ = ["FakeGenerator", "FakeHandle", "FakePotential", "FakeStepModel", "ForkingFakeGenerator", "OracleScorer",
           "answer_model", "flat_confidence", "record_requests"]
