from promptflow.core import tool


@tool
def fetch_page(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode("utf-8", "replace")[:4000]
