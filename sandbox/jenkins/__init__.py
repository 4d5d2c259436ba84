"""Jenkins stand-in: the REST subset python-jenkins uses, with builds that really build
(`app.create_app`)."""
