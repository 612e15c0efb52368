"""Deploy-time tooling: the app package and the azd hooks. Left out of the deployed zip (.funcignore)."""
