"""The web app (FastAPI): ``earthloc serve``."""
