"""Business A: "Boulangerie Lemoine", a neighbourhood bakery in Lyon (3e) with a chat widget on its website.

FAQ only, no tools, ~150 lines of logs in French, no knowledge file (the owner never wrote one). The
assistant (gpt-4o-mini behind a website widget) mostly answers right; a few times it invents something,
a customer gives a thumbs down and the owner sometimes writes the right answer in the admin panel.
Customers type as people do on a phone: lower case, no accents, typos, "bjr", names and mobile numbers
when they want to order. Feedback is sparse, as on any widget: about a quarter of answers get a thumb.
"""

from __future__ import annotations

import random
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.businesses.common import Fact, LogBook, assistant, fr_person, user, vary, write_jsonl

NAME = "boulangerie"
TITLE = "Boulangerie Lemoine (Lyon, FAQ only, French, no knowledge file)"
SYSTEM = ("Tu es l'assistant de la Boulangerie Lemoine, 27 rue Paul Bert à Lyon 3e. Réponds en français, "
          "brièvement et uniquement avec les informations de la boulangerie.")
GREETINGS = ["Bonjour,", "Bonjour !", "Bjr", "Bonsoir,", "Hello", "Salut,", "Bonjour madame,", "Coucou"]
CLOSINGS = ["merci", "Merci !", "merci d'avance", "svp", "merci beaucoup", "bonne journée"]

FACTS: list[Fact] = [
    Fact("horaires", [
        "Quels sont vos horaires ?", "Vous êtes ouverts à quelle heure ?", "C'est quoi vos horaires d'ouverture ?",
        "Vous ouvrez à quelle heure le matin ?", "Jusqu'à quelle heure vous êtes ouverts ?",
        "À quelle heure fermez-vous le soir ?", "Vous fermez à quelle heure en semaine ?",
        "Horaires de la boulangerie ?", "Vous êtes ouvert le samedi après-midi ?",
    ], [
        "Nous sommes ouverts du mardi au samedi de 7h à 19h30, et le dimanche de 7h à 13h. La boulangerie est fermée le lundi.",
        "Du mardi au samedi : 7h - 19h30. Le dimanche : 7h - 13h. Fermé le lundi.",
        "La boulangerie ouvre à 7h du mardi au dimanche. Elle ferme à 19h30 du mardi au samedi et à 13h le dimanche. Nous sommes fermés le lundi.",
    ], wrong_answers=["Nous sommes ouverts tous les jours de 6h30 à 20h."],
        correction="Nous sommes ouverts du mardi au samedi de 7h à 19h30 et le dimanche de 7h à 13h. Fermé le lundi."),
    Fact("dimanche", [
        "Vous êtes ouverts le dimanche ?", "Ouvert dimanche matin ?", "Le dimanche vous fermez à quelle heure ?",
        "Est-ce que je peux passer dimanche après-midi ?", "Vous faites le dimanche ?",
        "Dimanche vous êtes là jusqu'à quand ?",
    ], [
        "Oui, le dimanche nous sommes ouverts de 7h à 13h. L'après-midi la boutique est fermée.",
        "Le dimanche, nous ouvrons de 7h à 13h seulement.",
    ]),
    Fact("lundi", [
        "Vous êtes ouverts le lundi ?", "Ouvert le lundi ?", "Est-ce que la boulangerie est ouverte lundi ?",
        "C'est quoi votre jour de fermeture ?", "Vous fermez quel jour dans la semaine ?",
    ], [
        "Non, la boulangerie est fermée le lundi. Nous vous accueillons du mardi au samedi de 7h à 19h30 et le dimanche de 7h à 13h.",
        "Nous sommes fermés le lundi, c'est notre jour de repos. Réouverture le mardi à 7h.",
    ], wrong_answers=["Oui, nous sommes ouverts le lundi de 7h à 19h30."],
        correction="Non, nous sommes fermés le lundi. Nous rouvrons le mardi à 7h."),
    Fact("baguette", [
        "Combien coûte la baguette ?", "C'est combien la tradition ?", "Prix de la baguette tradition ?",
        "La baguette classique est à combien ?", "Combien pour une baguette ?", "Vous vendez la tradi à combien ?",
        "Quel est le prix d'une baguette ?",
    ], [
        "La baguette tradition est à 1,30 € et la baguette classique à 1,10 €.",
        "Une tradition coûte 1,30 €, une baguette classique 1,10 €.",
        "Nos prix : baguette tradition 1,30 €, baguette classique 1,10 €.",
    ], wrong_answers=["La baguette tradition est à 1,50 €."],
        correction="La baguette tradition est à 1,30 € et la baguette classique à 1,10 €."),
    Fact("viennoiseries", [
        "Combien coûte un croissant ?", "Le pain au chocolat c'est combien ?", "Prix des croissants ?",
        "C'est combien les viennoiseries ?", "Combien pour un croissant et un pain au chocolat ?",
        "Vos croissants sont à quel prix ?", "Tarif du pain au chocolat ?",
    ], [
        "Le croissant est à 1,20 € et le pain au chocolat à 1,40 €. Tous nos croissants sont pur beurre.",
        "Croissant : 1,20 €. Pain au chocolat : 1,40 €.",
    ]),
    Fact("levain", [
        "Vous faites du pain au levain ?", "Combien coûte le pain de campagne ?", "Le pain au levain est à combien ?",
        "Vous avez du pain de campagne au levain ?", "Prix du gros pain au levain ?",
    ], [
        "Oui, notre pain de campagne au levain naturel (500 g) est à 3,80 €.",
        "Notre pain de campagne au levain de 500 g coûte 3,80 €. Il est fait tous les jours.",
    ]),
    Fact("formule", [
        "Vous faites une formule le midi ?", "C'est combien la formule déjeuner ?", "Vous avez des sandwichs le midi ?",
        "Prix de la formule sandwich ?", "Il y a un menu le midi ?", "La formule sandwich boisson dessert c'est combien ?",
    ], [
        "Oui, la formule du midi (sandwich + boisson + dessert) est à 9,50 €, de 11h30 à 14h.",
        "Notre formule déjeuner sandwich, boisson et dessert coûte 9,50 €. Elle est servie de 11h30 à 14h.",
    ]),
    Fact("delai_gateau", [
        "Combien de temps à l'avance pour commander un gâteau ?", "Il faut commander les gâteaux combien de jours avant ?",
        "Je peux commander un gâteau pour demain ?", "Quel délai pour une commande de gâteau ?",
        "Vous prenez les commandes de gâteaux la veille ?", "C'est quoi le délai pour un entremets ?",
    ], [
        "Les gâteaux sur commande se réservent au moins 48h à l'avance, par téléphone ou directement en boutique.",
        "Il faut commander au minimum 48h à l'avance pour les gâteaux. Vous pouvez passer commande en boutique ou par téléphone.",
    ], wrong_answers=["Vous pouvez commander votre gâteau la veille avant 18h."],
        correction="Il faut commander au moins 48h à l'avance pour les gâteaux, en boutique ou par téléphone."),
    Fact("prix_gateau", [
        "Combien coûte un gâteau d'anniversaire ?", "Quel est le prix d'un fraisier ?", "Combien pour un gâteau de 8 personnes ?",
        "C'est quoi les tarifs des entremets ?", "Un gâteau pour 10 ça fait combien ?", "Prix des gâteaux sur commande ?",
    ], [
        "Nos gâteaux sur commande (fraisier, framboisier, entremets chocolat) sont à 4,50 € la part, à partir de 6 parts.",
        "Comptez 4,50 € par part pour un gâteau sur commande, avec un minimum de 6 parts.",
    ]),
    Fact("livraison", [
        "Vous livrez ?", "Est-ce que vous faites la livraison ?", "Vous livrez jusqu'où ?", "Combien coûte la livraison ?",
        "Vous livrez à Villeurbanne ?", "Livraison possible dans le 7e ?", "Les frais de livraison c'est combien ?",
    ], [
        "Oui, nous livrons dans un rayon de 5 km autour de la boutique, du mardi au samedi. La livraison coûte 4 €, et elle est offerte dès 40 € d'achat.",
        "Nous livrons à 5 km autour de la boulangerie (du mardi au samedi) pour 4 €, gratuitement à partir de 40 € de commande.",
    ], wrong_answers=["Oui, la livraison est gratuite partout à Lyon."]),
    Fact("livraison_gratuite", [
        "La livraison est gratuite à partir de combien ?", "À partir de quel montant la livraison est offerte ?",
        "Il y a un minimum pour la livraison gratuite ?",
    ], [
        "La livraison est offerte dès 40 € d'achat ; en dessous, elle coûte 4 €.",
        "À partir de 40 € de commande, la livraison est gratuite. Sinon, c'est 4 €.",
    ]),
    Fact("sans_gluten", [
        "Vous avez du pain sans gluten ?", "Vous faites des produits sans gluten ?", "Je suis cœliaque, vous avez quelque chose pour moi ?",
        "Il y a des gâteaux sans gluten ?", "Est-ce que vous proposez du sans gluten ?",
    ], [
        "Non, nous ne proposons pas de produits sans gluten : tout est fait dans le même fournil avec de la farine de blé, donc il y a un risque de contamination.",
        "Malheureusement non, nous n'avons pas de produits sans gluten. Notre fournil travaille la farine de blé et nous ne pouvons pas garantir l'absence de traces.",
    ], wrong_answers=["Oui, nous avons un pain sans gluten le samedi."],
        correction="Non, nous ne faisons pas de produits sans gluten : tout est préparé dans le même fournil avec de la farine de blé."),
    Fact("fruits_a_coque", [
        "Y a-t-il des fruits à coque dans vos produits ?", "Mon fils est allergique aux noix, c'est possible ?",
        "Vous utilisez des noisettes ou des amandes ?", "Est-ce qu'il y a des traces d'arachide ?",
        "Quels allergènes dans vos viennoiseries ?",
    ], [
        "Nous travaillons les fruits à coque (amandes, noisettes) dans l'atelier : tous nos produits peuvent contenir des traces de fruits à coque. La liste des allergènes est affichée en boutique.",
        "Tous nos produits peuvent contenir des traces de fruits à coque, car l'atelier utilise amandes et noisettes. Vous trouverez la liste complète des allergènes en boutique.",
    ]),
    Fact("vegan", [
        "Vous avez des produits vegan ?", "Le pain est vegan ?", "Il y a du beurre dans la baguette ?",
        "Les croissants sont vegan ?", "Vous faites des viennoiseries vegan ?",
    ], [
        "Nos baguettes et nos pains au levain sont vegan (sans beurre, sans lait, sans œuf). Les viennoiseries sont au beurre, elles ne sont donc pas vegan.",
        "Les pains et baguettes sont vegan. Par contre, nos viennoiseries sont faites au beurre.",
    ]),
    Fact("paiement", [
        "Vous prenez la carte bleue ?", "On peut payer par carte ?", "Vous acceptez les tickets restaurant ?",
        "Quels moyens de paiement vous acceptez ?", "Je peux payer par chèque ?", "Paiement sans contact possible ?",
    ], [
        "Nous acceptons la carte bancaire (sans contact aussi), les espèces et les tickets restaurant. Nous ne prenons pas les chèques.",
        "Carte bancaire, espèces et tickets restaurant sont acceptés. Pas de chèques.",
    ]),
    Fact("adresse", [
        "Vous êtes où ?", "C'est quoi votre adresse ?", "Où se trouve la boulangerie ?", "Comment vous trouver ?",
        "Vous êtes près de quel métro ?",
    ], [
        "Nous sommes au 27 rue Paul Bert, Lyon 3e, à deux minutes du métro Saxe-Gambetta.",
        "La boulangerie est au 27 rue Paul Bert dans le 3e arrondissement, près du métro Saxe-Gambetta.",
    ]),
    Fact("galette", [
        "Vous faites la galette des rois ?", "Combien coûte une galette des rois ?", "La galette frangipane c'est combien ?",
        "Prix de la galette pour 6 ?",
    ], [
        "Oui, en janvier nous faisons la galette des rois frangipane : 19 € pour 6 personnes.",
        "La galette des rois frangipane (6 personnes) est à 19 €, disponible tout le mois de janvier.",
    ]),
]

# Things customers ask that the bakery does not do, and small talk.
NOT_OFFERED = [
    ("Vous faites des macarons ?", "Non, nous ne faisons pas de macarons. Nous proposons des viennoiseries, des pains, des tartes et des gâteaux sur commande."),
    ("Vous avez des bagels ?", "Non, nous ne faisons pas de bagels. Pour le midi, nous avons des sandwichs sur baguette tradition."),
    ("Vous faites traiteur pour les mariages ?", "Nous ne faisons pas traiteur, mais nous pouvons préparer des gâteaux sur commande (48h à l'avance, 4,50 € la part)."),
]
SMALL_TALK = [
    ("Merci beaucoup !", "Avec plaisir ! Bonne journée."), ("merci", "Je vous en prie, à bientôt à la boulangerie !"),
    ("Super merci", "Avec plaisir ! À bientôt."), ("ok top", "Parfait ! N'hésitez pas si vous avez d'autres questions."),
]
ORDERS = [
    "Bonjour, je suis {name}, je voudrais commander un fraisier pour 8 personnes pour samedi. Mon numéro : {phone}",
    "Bonjour c'est {first} {last}, est-ce que vous pouvez me rappeler au {phone} pour une commande de gâteau ?",
    "Je voudrais réserver 20 croissants pour dimanche matin, au nom de {name}, tel {phone}",
    "Bonsoir, {name} ici. Je voudrais un gâteau d'anniversaire pour 10 personnes, vous pouvez m'écrire à {email} ?",
    "je m'appelle {first}, je voudrais une livraison au {address} pour mardi, c'est possible ? {phone}",
]
ORDER_ANSWERS = [
    "Merci {first} ! Je ne peux pas enregistrer de commande ici : les gâteaux se commandent au moins 48h à l'avance, en boutique ou par téléphone. Comptez 4,50 € la part.",
    "Bonjour {first}, pour toute commande il faut passer en boutique ou appeler la boulangerie, au moins 48h à l'avance. Je ne peux pas prendre la commande dans ce chat.",
]


def generate(out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """Write the bakery's logs into ``out_dir`` (two monthly JSONL exports and a feedback export)."""
    rng = random.Random(f"boulangerie:{seed}")
    book = LogBook(rng, org_id="org-boulangerie-lemoine", start=datetime(2025, 12, 2, 7, 40),
                   system_prompt=SYSTEM, model="gpt-4o-mini", id_prefix="wdg", minutes_between=(20, 900))

    def ask(fact: Fact) -> str:
        return vary(rng.choice(fact.questions), rng, GREETINGS, CLOSINGS, p_no_accents=0.3, p_lower=0.35)

    def feedback_for_right() -> dict[str, Any] | None:
        roll = rng.random()
        return {"thumbs": 1} if roll < 0.24 else ({"thumbs": -1} if roll < 0.26 else None)

    # every interaction is a job; the jobs are shuffled so the log is in the order customers came, not by topic
    jobs: list[Any] = []
    weights = {"horaires": 10, "dimanche": 7, "lundi": 5, "baguette": 6, "viennoiseries": 6, "livraison": 8,
               "delai_gateau": 7, "prix_gateau": 6, "sans_gluten": 5}
    for fact in FACTS:  # single questions, the popular ones more often
        for _ in range(weights.get(fact.id, 4)):
            jobs.append(lambda f=fact: book.add([user(ask(f)), assistant(rng.choice(f.answers))], "faq",
                                                feedback=feedback_for_right()))

    # the assistant got some wrong: thumbs down, and the owner corrected two of them in the admin panel
    for i, fact in enumerate(f for f in FACTS if f.wrong_answers):
        def wrong(f: Fact = fact, correct: bool = i < 2) -> None:
            row = book.add([user(ask(f)), assistant(rng.choice(f.wrong_answers))], "faq", feedback={"thumbs": -1})
            if correct and f.correction:
                book.feedback_event(row, delay_hours=rng.uniform(5, 40), admin_correction=f.correction)
        jobs.append(wrong)

    def conversation() -> None:  # two or three questions in a row
        conversation_id = book.new_id("conv")
        turns: list[dict[str, Any]] = []
        for fact in rng.sample(FACTS, rng.choice([2, 2, 3])):
            turns = turns + [user(ask(fact)), assistant(rng.choice(fact.answers))]
            book.add(list(turns), "faq", conversation_id=conversation_id, feedback=feedback_for_right(),
                     seconds_after=rng.uniform(20, 150) if len(turns) > 2 else None)
    jobs += [conversation] * 12

    for template in ORDERS + rng.sample(ORDERS, 3):  # orders with names and numbers: the widget cannot take them
        def order(t: str = template) -> None:
            person = fr_person(rng)
            book.add([user(t.format(**person)), assistant(rng.choice(ORDER_ANSWERS).format(**person))], "support",
                     feedback={"thumbs": 1} if rng.random() < 0.3 else None)
        jobs.append(order)
    for question, answer in NOT_OFFERED + NOT_OFFERED[:2]:
        jobs.append(lambda q=question, a=answer: book.add(
            [user(vary(q, rng, GREETINGS, CLOSINGS, p_no_accents=0.3)), assistant(a)], "faq",
            feedback={"thumbs": 1} if rng.random() < 0.3 else None))
    for question, answer in SMALL_TALK * 2:
        jobs.append(lambda q=question, a=answer: book.add([user(q), assistant(a)], "chat"))
    rng.shuffle(jobs)
    for job in jobs:
        job()

    # a few thumbs arrive after the fact (the widget sends them as events)
    for row in rng.sample([r for r in book.rows if "feedback" not in r and r["example_type"] == "faq"], 6):
        book.feedback_event(row, delay_hours=rng.uniform(0.05, 2), thumbs=1)

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {f"widget-export-{month}.jsonl": [r for r in book.rows if r["created_at"].startswith(month)]
             for month in sorted({r["created_at"][:7] for r in book.rows})}
    files["widget-feedback.jsonl"] = sorted(book.later_feedback, key=lambda e: e["created_at"])
    lines = sum(write_jsonl(out_dir / name, rows) for name, rows in files.items() if rows)
    return {"business": NAME, "lines": lines, "interactions": len(book.rows),
            "feedback_events": len(book.later_feedback), "files": sorted(n for n, r in files.items() if r),
            "rows": book.rows, "system_prompt": SYSTEM}
