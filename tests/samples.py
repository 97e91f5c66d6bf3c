"""Small S3 json samples shared by the data tests: the record form and its column-list order, per task."""

CTX = "The Eiffel Tower was finished in 1889 in Paris."
RECORDS = {
    "imdb": [{"text": "A wonderful, moving film.", "label": 1}, {"text": "Dull and far too long.", "label": 0}],
    "rte": [
        {"text1": CTX, "text2": "The tower was finished in 1889.", "label": 0},
        {"text1": CTX, "text2": "The tower is in Rome.", "label": 1},
    ],
    "qnli": [
        {"text1": CTX, "text2": "When was the Eiffel Tower finished?", "label": 0},
        {"text1": CTX, "text2": "Who designed the Louvre pyramid?", "label": 1},
    ],
    "adqa": [
        {
            "context": CTX,
            "question": "When was it finished?",
            "answer": "1889",
            "start_idx": 33,
            "end_idx": 37,
            "id": "q1",
        },
        {"context": CTX, "question": "Where is it?", "answer": "Paris", "start_idx": 41, "end_idx": 45, "id": "q2"},
    ],
}
COLUMNS = {
    "imdb": ["text", "label"],
    "rte": ["text1", "text2", "label"],
    "qnli": ["text1", "text2", "label"],
    "adqa": ["context", "question", "answer", "start_idx", "end_idx", "id"],
}
