"""One router per wire format."""
