"""GitLab stand-in: the API v4 subset Kepler drives with python-gitlab (`app.create_app`)."""
