"""Input decoding with limits (images, texts) and, later, output encoding."""
