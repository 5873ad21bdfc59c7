from competition.cli import app

app()
