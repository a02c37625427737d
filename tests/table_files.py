"""Small tables in the published layouts of Titanic (Kaggle's train.csv), Adult (the Kaggle/OpenML
CSV with a header, "?" for missing) and the credit-card fraud table (creditcard.csv), written by
pandas (CSV) and pyarrow (Parquet, through pandas), with signal in the features so a model can learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

TITANIC = ["PassengerId", "Survived", "Pclass", "Name", "Sex", "Age", "SibSp", "Parch", "Ticket", "Fare", "Cabin",
           "Embarked"]
ADULT = ["age", "workclass", "fnlwgt", "education", "educational-num", "marital-status", "occupation", "relationship",
         "race", "gender", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income"]
FRAUD = ["Time", *(f"V{i}" for i in range(1, 29)), "Amount", "Class"]


def titanic(rows: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sex = rng.choice(["male", "female"], rows, p=[0.65, 0.35])
    pclass = rng.choice([1, 2, 3], rows, p=[0.25, 0.2, 0.55])
    survived = (rng.random(rows) < np.where(sex == "female", 0.75, 0.2) + (pclass == 1) * 0.15).astype(int)
    age = np.round(rng.uniform(1, 70, rows), 1)
    age[rng.random(rows) < 0.2] = np.nan  # Titanic's Age: a fifth blank
    cabin = np.array([f"{rng.choice(list('ABCDEF'))}{rng.integers(1, 150)}" for _ in range(rows)], dtype=object)
    cabin[rng.random(rows) < 0.75] = None  # mostly blank, and varied where not
    embarked = rng.choice(["S", "C", "Q"], rows, p=[0.7, 0.2, 0.1]).astype(object)
    embarked[:2] = None
    tickets = np.array([f"{rng.choice(['A/5 ', 'PC ', 'STON/O2. ', ''])}{rng.integers(1000, 400000)}"
                        for _ in range(rows * 3 // 4)], dtype=object)
    return pd.DataFrame({
        "PassengerId": np.arange(1, rows + 1), "Survived": survived, "Pclass": pclass,
        "Name": [f"Surname{i}, {'Mr.' if s == 'male' else 'Mrs.'} Given {i}" for i, s in enumerate(sex)],
        "Sex": sex, "Age": age, "SibSp": rng.integers(0, 5, rows), "Parch": rng.integers(0, 4, rows),
        "Ticket": tickets[rng.integers(0, len(tickets), rows)],  # shared by some: too varied, not unique
        "Fare": np.round(rng.gamma(2, 15, rows) * (4 - pclass), 4), "Cabin": cabin, "Embarked": embarked,
    })[TITANIC]


ADULT_VALUES = {
    "workclass": ["Private", "Self-emp-not-inc", "Local-gov", "State-gov", "Self-emp-inc", "Federal-gov", "?"],
    "education": ["HS-grad", "Some-college", "Bachelors", "Masters", "Assoc-voc", "11th", "Doctorate", "9th"],
    "marital-status": ["Married-civ-spouse", "Never-married", "Divorced", "Separated", "Widowed"],
    "occupation": ["Prof-specialty", "Craft-repair", "Exec-managerial", "Adm-clerical", "Sales", "Other-service", "?"],
    "relationship": ["Husband", "Not-in-family", "Own-child", "Unmarried", "Wife", "Other-relative"],
    "race": ["White", "Black", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other"],
    "gender": ["Male", "Female"],
    "native-country": ["United-States", "Mexico", "?", "Philippines", "Germany", "Canada", "India", "Cuba"],
}


def adult(rows: int = 400, seed: int = 1, dotted: bool = False) -> pd.DataFrame:
    """`dotted`: the labels as UCI's adult.test writes them ("<=50K." and ">50K.")."""
    rng = np.random.default_rng(seed)
    frame = {name: rng.choice(values, rows) for name, values in ADULT_VALUES.items()}
    frame["age"] = rng.integers(17, 90, rows)
    frame["fnlwgt"] = rng.integers(10000, 1500000, rows)  # a different number in (nearly) every row: no identifier
    frame["educational-num"] = rng.integers(1, 17, rows)
    frame["capital-gain"] = np.where(rng.random(rows) < 0.1, rng.integers(1, 99999, rows), 0)
    frame["capital-loss"] = np.where(rng.random(rows) < 0.05, rng.integers(1, 4000, rows), 0)
    frame["hours-per-week"] = rng.integers(1, 99, rows)
    married = frame["marital-status"] == "Married-civ-spouse"
    rich = (frame["educational-num"] + married * 5 + rng.normal(0, 3, rows)) > 15
    frame["income"] = np.where(rich, ">50K", "<=50K")
    if dotted:
        frame["income"] = np.char.add(frame["income"].astype(str), ".")
    return pd.DataFrame(frame)[ADULT]


def fraud(rows: int = 20000, positives: int = 40, seed: int = 2) -> pd.DataFrame:
    """creditcard.csv's layout: Time (seconds), V1..V28 (PCA components), Amount, Class 0/1 with a rare 1."""
    rng = np.random.default_rng(seed)
    cls = np.zeros(rows, dtype=np.int64)
    cls[rng.choice(rows, positives, replace=False)] = 1
    v = rng.normal(0, 1, (rows, 28))
    v[cls == 1, :4] += np.array([-3.0, 2.5, -3.5, 3.0])  # fraud is unusual along a few components, as in the real one
    frame = pd.DataFrame(v, columns=FRAUD[1:29])
    frame.insert(0, "Time", np.sort(rng.integers(0, 172792, rows)).astype(np.float64))
    frame["Amount"] = np.round(rng.gamma(1.5, 60, rows), 2)
    frame["Class"] = cls
    return frame[FRAUD]


def write(frame: pd.DataFrame, path: Path) -> Path:
    """A CSV (as Kaggle's, no index) or a Parquet file (pyarrow), by `path`'s suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path
