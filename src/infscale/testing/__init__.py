"""Test doubles that ship with infscale: fake generators, oracle scorers, a fake OpenAI server, and a
fault-injecting proxy to put in front of it (or of a real server on 127.0.0.1)."""

from .fakes import (FakeGenerator, FakeHandle, FakePotential, FakeStepModel, ForkingFakeGenerator, OracleScorer,
                    answer_model, flat_confidence, record_requests)
from .fault_proxy import FAULTS, FaultProxy

__all__ = ["FAULTS", "FaultProxy", "FakeGenerator", "FakeHandle", "FakePotential", "FakeStepModel",
           "ForkingFakeGenerator", "OracleScorer", "answer_model", "flat_confidence", "record_requests"]
