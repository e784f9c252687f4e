"""The protocol file: validated at start-up and turned into app.domain.protocol values."""

from app.protocol.loader import ProtocolError, ProtocolProblem, load_protocol, parse_protocol

__all__ = ["ProtocolError", "ProtocolProblem", "load_protocol", "parse_protocol"]
