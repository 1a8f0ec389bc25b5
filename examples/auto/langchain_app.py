"""A small LangChain pipeline with no caching code in it.

It reads ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` from the environment, as ChatOpenAI does.
Run it under the launcher to get caching without editing it:

    stratacache run -- python examples/auto/langchain_app.py
"""

from __future__ import annotations

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_openai import ChatOpenAI

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
