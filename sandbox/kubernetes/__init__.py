"""Kubernetes + Istio API stand-in with its rollout and traffic simulation
(`app.create_app`)."""
