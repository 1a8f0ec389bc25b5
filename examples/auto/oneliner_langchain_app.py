"""langchain_app.py with the one-line change instead of the launcher.

A run of this file and a ``stratacache run`` of langchain_app.py use the same cache entries:

    python examples/auto/oneliner_langchain_app.py
    stratacache run -- python examples/auto/langchain_app.py   # no provider request
"""

from __future__ import annotations

from langchain_core.globals import set_llm_cache
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

from stratacache.langchain import LLMCache

set_llm_cache(LLMCache())  # the one line

QUESTIONS = [
    "What is a write-through cache?",
    "When should I invalidate a cached answer?",
    "What is a write-through cache?",  # asked again: served from the cache
    "Name two eviction policies.",
    "What does TTL stand for?",
]


def main() -> None:
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are a concise assistant for backend engineers."),
            ("human", "{question}"),
        ]
    )
    model = ChatOpenAI(model="gpt-4o-mini", temperature=0)
    chain = prompt | model | StrOutputParser()
    for question in QUESTIONS:
        print(f"Q: {question}")
        print(f"A: {chain.invoke({'question': question})}")


if __name__ == "__main__":
    main()
