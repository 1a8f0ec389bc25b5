"""Worker pools with no caching code in them. A spawn pool asks LiteLLM and a fork pool asks
LangChain, which the parent imported before forking (so the forked workers inherit whatever the
parent set up). The parent makes no call itself before forking: forked workers would share its
open HTTP connection, a classic fork hazard that has nothing to do with caching.
Under the launcher, every worker process is cached too:

    stratacache run -- python examples/auto/multiprocessing_app.py
"""

from __future__ import annotations

import multiprocessing

SPAWN_QUESTIONS = [
    "spawn worker: what is a cache key?",
    "spawn worker: what is a cold start?",
    "spawn worker: what is a cache key?",  # asked again
]

FORK_QUESTIONS = [
    "fork worker: what is cache warming?",
    "fork worker: what is an eviction?",
    "fork worker: what is cache warming?",  # asked again
]


def ask_litellm(question: str) -> str:
    import litellm  # only the spawned workers use LiteLLM

    response = litellm.completion(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": question}],
        temperature=0,
    )
    return response.choices[0].message.content


def ask_langchain(question: str) -> str:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="gpt-4o-mini", temperature=0).invoke(question).content


def main() -> None:
    import langchain_openai  # noqa: F401 - imported by the parent, inherited by the fork pool

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        spawned = pool.map(ask_litellm, SPAWN_QUESTIONS, chunksize=1)
    with multiprocessing.get_context("fork").Pool(2) as pool:
        forked = pool.map(ask_langchain, FORK_QUESTIONS, chunksize=1)
    for question, answer in zip(SPAWN_QUESTIONS + FORK_QUESTIONS, spawned + forked, strict=True):
        print(f"Q: {question}")
        print(f"A: {answer}")


if __name__ == "__main__":
    main()
