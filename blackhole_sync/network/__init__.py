"""Network coordination: the peer-message decision, consensus, phased rollout, compatibility
and network metrics (filled by the coordination work)."""

__all__: list[str] = []
