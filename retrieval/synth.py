"""Synthetic benchmark with a planted truth, written in the Amazon 2014 5-core raw format.

Why: the real Beauty / Health dumps are large downloads; a generator with the same file format lets the same
loader (``retrieval/formats.py``) serve real and synthetic data, and its planted truth (who likes what, which
items are new) lets evaluation and tests check that the pipeline recovers something real.

The generative story, top to bottom (``generate``):

1. a Beauty-like or Health-like taxonomy (>= 4 levels, >= 150 leaves), brands per area, attributes per area;
2. items: a leaf, a brand, 1-3 feature attributes and a size; title and description are composed from them, so
   the text carries exactly what users care about; each item has a popularity and a release day;
3. users: a time-localised activity window, a review count (>= 5), a few taste leaves whose weights drift from a
   start to an end mix, favourite brands and attributes, and a rate of exploring outside their taste;
4. review slots (user, day) are laid out first, so the 70/30 time cut is known; items released after the cut
   are the planted strict cold items;
5. each slot picks a leaf (taste or exploration) and then an item released by that day, weighted by
   popularity × recency × brand/attribute affinity; one review per (user, item);
6. repair: every item gets >= 5 reviews (slots are moved from items that have more), every non-cold item gets
   one training review, so the 5-core property and "cold == released after the cut" hold exactly;
7. ratings from taste match (leaf, brand, attributes) plus user/item bias and noise, cut at quantiles that give
   the real rating mix (~89 % of ratings >= 3).

Outputs: ``raw/reviews_<Cat>_5.json.gz`` (JSON lines), ``raw/meta_<Cat>.json.gz`` (one ``repr(dict)`` per
line, like the 2014 dumps) and ``truth/truth.json.gz`` (tastes, item attributes; never read by the pipeline).
Same preset + seed -> byte-identical files.
"""
from __future__ import annotations

import datetime as dt
import gzip
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MIN_REVIEWS = 5  # the 5-core property: every user and every item has at least this many reviews
TRAIN_RATIO = 0.7  # the global time split the planted cold items are defined against
DAY = 86400


# ---------------------------------------------------------------------------------------------------------------
# Taxonomies. Level 2 -> level 3 -> level-4 leaves. "Name:Product Type" gives the noun used in titles (default:
# the name itself). A level-3 key with an empty list is itself a leaf (a 3-level path, as in the real data).
# ---------------------------------------------------------------------------------------------------------------
BEAUTY_TREE: dict[str, dict[str, list[str]]] = {
    "Skin Care": {
        "Face": ["Cleansers:Facial Cleanser", "Moisturizers:Face Moisturizer", "Toners & Astringents:Facial Toner",
                 "Serums:Face Serum", "Exfoliators & Scrubs:Facial Scrub", "Masks:Face Mask",
                 "Sunscreens:Face Sunscreen", "Night Creams:Night Cream", "Oils:Facial Oil", "Mists:Facial Mist",
                 "BB & CC Creams:BB Cream", "Peels:Facial Peel", "Acne Treatments:Acne Treatment",
                 "Anti-Aging Treatments:Anti-Aging Cream"],
        "Eyes": ["Creams:Eye Cream", "Gels:Eye Gel", "Serums:Eye Serum", "Masks & Patches:Under-Eye Patches",
                 "Puffiness Treatments:Eye De-Puffer"],
        "Body": ["Moisturizers:Body Lotion", "Cleansers:Body Cleanser", "Scrubs:Body Scrub",
                 "Firming Treatments:Firming Cream", "Stretch Mark Treatments:Stretch Mark Cream",
                 "Body Oils:Body Oil", "Butters:Body Butter"],
        "Lips": ["Balms & Moisturizers:Lip Balm", "Treatments:Lip Treatment", "Scrubs:Lip Scrub",
                 "Sunscreens:Lip Sunscreen"],
        "Hands & Nails": ["Hand Creams:Hand Cream", "Cuticle Care:Cuticle Oil", "Nail Treatments:Nail Treatment"],
        "Feet": ["Foot Creams:Foot Cream", "Foot Masks:Foot Peel Mask", "Callus Removers:Callus Remover"],
        "Sun": ["Sunscreens:Sunscreen Lotion", "After Sun Care:After Sun Gel", "Self-Tanners:Self-Tanner",
                "Tanning Oils:Tanning Oil"],
        "Sets & Kits:Skin Care Set": [],
    },
    "Makeup": {
        "Face": ["Foundation:Foundation", "Concealers:Concealer", "Powder:Setting Powder", "Blush:Blush",
                 "Bronzers:Bronzer", "Highlighters:Highlighter", "Primers:Face Primer",
                 "Setting Sprays:Setting Spray", "Contouring:Contour Kit", "Tinted Moisturizers:Tinted Moisturizer"],
        "Eyes": ["Mascara:Mascara", "Eyeliner:Eyeliner", "Eyeshadow:Eyeshadow", "Eyebrow Color:Brow Pencil",
                 "Eye Primers:Eyeshadow Primer", "False Eyelashes:False Lashes",
                 "Eyeshadow Palettes:Eyeshadow Palette", "Lash Enhancers:Lash Serum"],
        "Lips": ["Lipstick:Lipstick", "Lip Gloss:Lip Gloss", "Lip Liners:Lip Liner", "Lip Stains:Lip Stain",
                 "Lip Plumpers:Lip Plumper", "Liquid Lipstick:Liquid Lipstick"],
        "Nails": ["Nail Polish:Nail Polish", "Top & Base Coats:Top Coat", "Nail Polish Removers:Nail Polish Remover",
                  "Nail Art:Nail Art Stickers", "Gel Polish:Gel Nail Polish", "Nail Strengtheners:Nail Strengthener"],
        "Makeup Remover:Makeup Remover": [],
        "Makeup Sets:Makeup Set": [],
    },
    "Hair Care": {
        "Shampoos:Shampoo": [],
        "Conditioners:Conditioner": [],
        "Shampoo & Conditioner Sets:Shampoo and Conditioner Set": [],
        "Dry Shampoos:Dry Shampoo": [],
        "Styling Products": ["Gels:Hair Gel", "Mousses & Foams:Styling Mousse", "Hair Sprays:Hair Spray",
                             "Pomades & Waxes:Pomade", "Creams & Lotions:Styling Cream",
                             "Putties & Clays:Styling Clay", "Heat Protectants:Heat Protectant Spray",
                             "Texturizing Sprays:Texturizing Spray", "Sea Salt Sprays:Sea Salt Spray"],
        "Hair Treatments": ["Hair Oils:Hair Oil", "Hair Masks:Hair Mask", "Leave-In Conditioners:Leave-In Conditioner",
                            "Serums:Hair Serum", "Scalp Treatments:Scalp Treatment",
                            "Hair Loss Products:Hair Regrowth Treatment", "Deep Conditioners:Deep Conditioner"],
        "Hair Coloring": ["Permanent Color:Permanent Hair Color", "Semi-Permanent Color:Semi-Permanent Hair Dye",
                          "Highlighting Kits:Highlighting Kit", "Root Touch-Up:Root Touch-Up",
                          "Color Removers:Hair Color Remover", "Henna:Henna Hair Dye"],
        "Styling Tools": ["Flat Irons:Flat Iron", "Curling Irons:Curling Iron", "Hot Air Brushes:Hot Air Brush",
                          "Hair Dryers:Hair Dryer", "Curling Wands:Curling Wand", "Hot Rollers:Hot Rollers"],
        "Hair Accessories": ["Headbands:Headband", "Clips & Barrettes:Hair Clips", "Elastics & Ties:Hair Ties",
                             "Brushes:Hair Brush", "Combs:Wide-Tooth Comb"],
        "Hair Perms & Relaxers": ["Relaxers:Hair Relaxer", "Texturizers:Texturizer", "Perms:Perm Kit"],
    },
    "Fragrance": {
        "Women": ["Eau de Parfum:Eau de Parfum", "Eau de Toilette:Eau de Toilette", "Body Mists:Body Mist",
                  "Perfume Oils:Perfume Oil", "Solid Perfumes:Solid Perfume", "Gift Sets:Fragrance Gift Set"],
        "Men": ["Eau de Toilette:Eau de Toilette", "Cologne:Cologne", "Aftershave:Aftershave Splash",
                "Deodorants:Scented Deodorant Stick", "Gift Sets:Cologne Gift Set"],
        "Unisex": ["Eau de Parfum:Eau de Parfum", "Eau de Toilette:Eau de Toilette", "Body Sprays:Body Spray"],
        "Children's:Kids Fragrance": [],
    },
    "Bath & Body": {
        "Cleansers": ["Body Washes:Body Wash", "Bar Soaps:Bar Soap", "Shower Gels:Shower Gel",
                      "Liquid Hand Soap:Liquid Hand Soap", "Bath Oils:Bath Oil"],
        "Bath": ["Bath Salts:Bath Salts", "Bubble Bath:Bubble Bath", "Bath Bombs:Bath Bomb",
                 "Bath Pearls & Flakes:Bath Flakes"],
        "Deodorants & Antiperspirants": ["Antiperspirants:Antiperspirant", "Natural Deodorants:Natural Deodorant",
                                         "Body Powders:Body Powder"],
        "Aromatherapy": ["Essential Oils:Essential Oil", "Massage Oils:Massage Oil", "Candles:Aromatherapy Candle"],
        "Bath & Body Sets:Bath Gift Set": [],
    },
    "Tools & Accessories": {
        "Makeup Brushes & Tools": ["Foundation Brushes:Foundation Brush", "Powder Brushes:Powder Brush",
                                   "Eyeshadow Brushes:Eyeshadow Brush", "Brush Sets:Makeup Brush Set",
                                   "Sponges & Applicators:Makeup Sponge", "Eyelash Curlers:Eyelash Curler",
                                   "Brush Cleaners:Brush Cleanser", "Tweezers:Tweezers"],
        "Bags & Cases": ["Cosmetic Bags:Cosmetic Bag", "Train Cases:Train Case", "Toiletry Bags:Toiletry Bag"],
        "Mirrors": ["Compact Mirrors:Compact Mirror", "Vanity Mirrors:Lighted Vanity Mirror"],
        "Nail Tools": ["Nail Clippers:Nail Clipper", "Files & Buffers:Nail File", "Cuticle Pushers:Cuticle Pusher",
                       "Manicure Sets:Manicure Set", "Nail Dryers:UV Nail Lamp"],
        "Skin Care Tools": ["Facial Cleansing Brushes:Facial Cleansing Brush", "Derma Rollers:Derma Roller",
                            "Blotting Papers:Blotting Paper", "Cotton Pads & Rounds:Cotton Rounds",
                            "Blackhead Extractors:Blackhead Extractor", "Facial Rollers:Jade Facial Roller"],
    },
    "Shave & Hair Removal": {
        "Men's": ["Razors & Blades:Men's Razor", "Shaving Creams:Shaving Cream", "Pre-Shaves:Pre-Shave Oil",
                  "Aftershaves:Aftershave Balm", "Beard Oils:Beard Oil", "Beard Trimmers:Beard Trimmer",
                  "Shaving Brushes:Shaving Brush"],
        "Women's": ["Razors & Blades:Women's Razor", "Shaving Gels:Shaving Gel", "Waxing Kits:Wax Kit",
                    "Depilatories:Hair Removal Cream", "Epilators:Epilator"],
    },
}

HEALTH_TREE: dict[str, dict[str, list[str]]] = {
    "Vitamins & Dietary Supplements": {
        "Vitamins": ["Multivitamins:Multivitamin", "Vitamin A:Vitamin A", "Vitamin B12:Vitamin B12",
                     "B-Complex:Vitamin B Complex", "Vitamin C:Vitamin C", "Vitamin D:Vitamin D3",
                     "Vitamin E:Vitamin E", "Vitamin K:Vitamin K2", "Prenatal Vitamins:Prenatal Multivitamin",
                     "Biotin:Biotin", "Folic Acid:Folic Acid"],
        "Minerals": ["Magnesium:Magnesium Supplement", "Calcium:Calcium Supplement", "Zinc:Zinc Supplement",
                     "Iron:Iron Supplement", "Potassium:Potassium Supplement", "Selenium:Selenium Supplement",
                     "Chromium:Chromium Picolinate", "Multiminerals:Multi-Mineral Complex", "Iodine:Iodine Supplement"],
        "Herbal Supplements": ["Turmeric:Turmeric Curcumin", "Ashwagandha:Ashwagandha Root", "Echinacea:Echinacea",
                               "Elderberry:Elderberry Syrup", "Ginkgo Biloba:Ginkgo Biloba", "Milk Thistle:Milk Thistle",
                               "Garlic:Garlic Extract", "Ginseng:Panax Ginseng", "Valerian:Valerian Root",
                               "St. John's Wort:St. John's Wort", "Saw Palmetto:Saw Palmetto",
                               "Green Tea Extract:Green Tea Extract", "Cinnamon:Cinnamon Extract"],
        "Fish Oil & Omegas": ["Fish Oil:Fish Oil", "Krill Oil:Krill Oil", "Flaxseed Oil:Flaxseed Oil",
                              "Algae Omega-3:Vegan Omega-3", "Cod Liver Oil:Cod Liver Oil",
                              "Evening Primrose Oil:Evening Primrose Oil"],
        "Probiotics:Probiotic": [],
        "Antioxidants": ["CoQ10:CoQ10", "Resveratrol:Resveratrol", "Alpha Lipoic Acid:Alpha Lipoic Acid",
                         "Astaxanthin:Astaxanthin", "Glutathione:Glutathione"],
        "Amino Acids": ["L-Arginine:L-Arginine", "L-Glutamine:L-Glutamine", "L-Theanine:L-Theanine",
                        "L-Lysine:L-Lysine", "5-HTP:5-HTP", "NAC:NAC"],
        "Digestive Supplements": ["Digestive Enzymes:Digestive Enzymes", "Fiber Supplements:Psyllium Fiber",
                                  "Apple Cider Vinegar:Apple Cider Vinegar Capsules"],
        "Joint Support": ["Glucosamine:Glucosamine Chondroitin", "Collagen:Collagen Peptides", "MSM:MSM"],
        "Melatonin:Melatonin": [],
    },
    "Sports Nutrition": {
        "Protein": ["Whey Protein:Whey Protein Powder", "Plant Protein:Plant Protein Powder",
                    "Casein Protein:Casein Protein Powder", "Protein Bars:Protein Bar", "Mass Gainers:Mass Gainer"],
        "Performance": ["Pre-Workout:Pre-Workout Powder", "Creatine:Creatine Monohydrate", "BCAAs:BCAA Powder",
                        "Electrolytes:Electrolyte Drink Mix", "Nitric Oxide Boosters:Nitric Oxide Booster",
                        "Beta-Alanine:Beta-Alanine"],
        "Weight Management": ["Fat Burners:Thermogenic Fat Burner", "Meal Replacements:Meal Replacement Shake",
                              "Appetite Control:Appetite Suppressant", "Garcinia Cambogia:Garcinia Cambogia",
                              "Green Coffee Bean Extract:Green Coffee Bean Extract"],
        "Energy": ["Energy Gels:Energy Gel", "Caffeine Pills:Caffeine Tablets"],
    },
    "Medical Supplies & Equipment": {
        "Health Monitors": ["Blood Pressure Monitors:Blood Pressure Monitor", "Thermometers:Digital Thermometer",
                            "Pulse Oximeters:Pulse Oximeter", "Scales:Digital Bathroom Scale",
                            "Blood Glucose Monitors:Blood Glucose Meter", "Heart Rate Monitors:Heart Rate Monitor"],
        "Braces, Splints & Supports": ["Knee Braces:Knee Brace", "Back Braces:Back Support Brace",
                                       "Wrist Braces:Wrist Brace", "Ankle Braces:Ankle Brace",
                                       "Compression Sleeves:Compression Sleeve", "Posture Correctors:Posture Corrector"],
        "First Aid": ["Bandages:Adhesive Bandages", "Antiseptics:Antiseptic Spray", "First Aid Kits:First Aid Kit",
                      "Gauze:Gauze Pads", "Cold & Hot Packs:Hot Cold Pack", "Burn Care:Burn Gel"],
        "Mobility Aids": ["Canes:Walking Cane", "Walkers:Rolling Walker", "Wheelchairs:Folding Wheelchair"],
        "Daily Living Aids": ["Pill Organizers:Weekly Pill Organizer", "Reachers:Reacher Grabber",
                              "Bath Safety:Shower Chair", "Pill Cutters:Pill Splitter"],
        "Occupational & Physical Therapy": ["Massagers:Handheld Massager", "TENS Units:TENS Unit",
                                            "Foam Rollers:Foam Roller", "Hand Exercisers:Hand Grip Strengthener"],
        "Incontinence:Incontinence Pads": [],
    },
    "Health Care": {
        "Pain Relievers": ["Acetaminophen:Acetaminophen Tablets", "Ibuprofen:Ibuprofen Tablets",
                           "Aspirin:Low Dose Aspirin", "Naproxen:Naproxen Sodium Tablets",
                           "Topical Analgesics:Pain Relief Cream", "Migraine Relief:Migraine Relief Tablets"],
        "Digestion & Nausea": ["Antacids:Antacid Chewables", "Laxatives:Stool Softener",
                               "Anti-Diarrheals:Anti-Diarrheal Caplets", "Gas Relief:Gas Relief Softgels",
                               "Nausea Relief:Motion Sickness Tablets"],
        "Cough & Cold": ["Cough Drops:Cough Drops", "Decongestants:Nasal Decongestant",
                         "Nasal Sprays:Saline Nasal Spray", "Vapor Rubs:Vapor Rub", "Cold Remedies:Zinc Cold Remedy",
                         "Sore Throat:Throat Spray"],
        "Sleep & Snoring": ["Sleep Aids:Nighttime Sleep Aid", "Snoring Aids:Anti-Snoring Mouthpiece",
                            "Sleep Masks:Sleep Mask", "Ear Plugs:Foam Ear Plugs",
                            "White Noise Machines:White Noise Machine"],
        "Allergy": ["Antihistamines:Allergy Relief Tablets", "Allergy Eye Drops:Allergy Eye Drops",
                    "Nasal Allergy Sprays:Nasal Allergy Spray"],
        "Foot Health": ["Insoles:Orthotic Insoles", "Corn & Callus:Corn Cushions", "Anti-Fungal:Antifungal Cream",
                        "Bunion Care:Bunion Corrector"],
        "Women's Health": ["Pregnancy Tests:Pregnancy Test", "Ovulation Tests:Ovulation Test Strips",
                           "Feminine Hygiene:Feminine Wash", "Menstrual Cups:Menstrual Cup",
                           "Yeast Infection:Yeast Infection Treatment"],
        "Eye Care": ["Contact Lens Care:Contact Lens Solution", "Eye Drops:Lubricant Eye Drops",
                     "Reading Glasses:Reading Glasses"],
        "Smoking Cessation:Nicotine Gum": [],
        "Ear Care:Ear Wax Removal Kit": [],
    },
    "Personal Care": {
        "Oral Care": ["Toothpaste:Toothpaste", "Manual Toothbrushes:Toothbrush",
                      "Electric Toothbrushes:Electric Toothbrush", "Dental Floss:Dental Floss",
                      "Mouthwash:Mouthwash", "Teeth Whitening:Teeth Whitening Strips",
                      "Water Flossers:Water Flosser", "Denture Care:Denture Cleanser"],
        "Shaving & Hair Removal": ["Men's Razors:Cartridge Razor", "Women's Razors:Women's Razor",
                                   "Electric Shavers:Electric Shaver", "Shaving Creams:Shaving Cream",
                                   "Hair Clippers:Hair Clipper"],
        "Deodorants & Antiperspirants:Deodorant": [],
        "Lip Care:Lip Balm": [],
    },
    "Household Supplies": {
        "Cleaning": ["All-Purpose Cleaners:All-Purpose Cleaner", "Dishwashing:Dish Soap",
                     "Disinfectant Wipes:Disinfectant Wipes", "Glass Cleaners:Glass Cleaner", "Sponges:Scrub Sponges"],
        "Laundry": ["Detergent:Laundry Detergent", "Fabric Softener:Fabric Softener",
                    "Stain Removers:Stain Remover", "Dryer Sheets:Dryer Sheets"],
        "Paper & Plastic": ["Paper Towels:Paper Towels", "Toilet Paper:Toilet Paper", "Facial Tissues:Facial Tissues",
                            "Trash Bags:Trash Bags", "Food Storage Bags:Food Storage Bags"],
        "Batteries:AA Batteries": [],
        "Air Fresheners": ["Sprays:Air Freshener Spray", "Plug-Ins:Plug-In Air Freshener",
                           "Odor Eliminators:Odor Eliminator"],
    },
    "Baby & Child Care": {
        "Diapering": ["Diapers:Diapers", "Baby Wipes:Baby Wipes", "Diaper Creams:Diaper Rash Cream"],
        "Baby Health": ["Thermometers:Baby Thermometer", "Nasal Aspirators:Nasal Aspirator",
                        "Teething Relief:Teething Gel", "Infant Pain Relief:Infant Fever Reducer"],
        "Children's Vitamins:Kids Multivitamin Gummies": [],
    },
    "Sexual Wellness": {
        "Safer Sex": ["Condoms:Latex Condoms", "Lubricants:Personal Lubricant"],
        "Fertility": ["Fertility Supplements:Fertility Supplement", "Fertility Monitors:Fertility Monitor"],
    },
}

# Attribute pools per level-2 area ("Area" or "Area/Level3" for a narrower override). Each "features" entry is a
# group of mutually exclusive options ("a|b|c"); an item takes 1-3 groups, one option each, plus one size.
_SKIN = {
    "features": ["for dry skin|for oily skin|for sensitive skin|for combination skin|for mature skin",
                 "fragrance-free|lavender scented|citrus scented", "SPF 15|SPF 30|SPF 50", "vegan", "cruelty-free",
                 "paraben-free", "organic", "hypoallergenic", "non-comedogenic",
                 "with hyaluronic acid|with vitamin C|with retinol|with niacinamide|with shea butter|with aloe vera"],
    "sizes": ["0.5 oz", "1 oz", "1.7 oz", "2 oz", "3.4 oz", "8 fl oz", "250 ml", "travel size"],
}
ATTRIBUTES: dict[str, dict[str, list[str]]] = {
    "Skin Care": _SKIN,
    "Makeup": {
        "features": ["matte|satin finish|shimmer", "long-wearing", "waterproof", "vegan", "cruelty-free",
                     "paraben-free", "talc-free", "for sensitive skin|for oily skin|for dry skin",
                     "in Nude|in Black|in Berry|in Coral|in Light Beige|in Medium|in Deep"],
        "sizes": ["0.1 oz", "0.27 oz", "0.35 oz", "0.5 oz", "1 oz", "travel size"],
    },
    "Hair Care": {
        "features": ["for curly hair|for fine hair|for color-treated hair|for damaged hair|for thick hair",
                     "sulfate-free", "silicone-free", "vegan", "organic",
                     "with argan oil|with keratin|with coconut oil|with tea tree oil",
                     "fragrance-free|coconut scented"],
        "sizes": ["8 oz", "12 oz", "16.9 oz", "33.8 oz", "250 ml", "travel size"],
    },
    "Hair Care/Styling Tools": {
        "features": ["ceramic|tourmaline|titanium", "ionic", "dual voltage", "with auto shut-off",
                     "for curly hair|for fine hair|for thick hair", "professional salon grade"],
        "sizes": ["1 inch", "1.25 inch", "1.5 inch", "2 inch", "travel size"],
    },
    "Hair Care/Hair Accessories": {
        "features": ["no-crease|non-slip", "vegan", "for curly hair|for fine hair|for thick hair",
                     "bamboo|stainless steel|silk", "in Black|in Tortoise|in Gold"],
        "sizes": ["pack of 2", "pack of 6", "pack of 12", "set of 3"],
    },
    "Fragrance": {
        "features": ["floral|woody|citrus|oriental|fresh|vanilla", "long-lasting", "vegan", "alcohol-free",
                     "for day|for evening"],
        "sizes": ["1 oz", "1.7 oz", "3.4 oz", "100 ml", "travel size", "rollerball"],
    },
    "Bath & Body": {
        "features": ["lavender|eucalyptus|coconut|rose|unscented", "organic", "vegan", "moisturizing",
                     "for sensitive skin|for dry skin", "aluminum-free", "paraben-free", "cruelty-free"],
        "sizes": ["8 oz", "16 oz", "500 ml", "pack of 3", "travel size"],
    },
    "Tools & Accessories": {
        "features": ["bamboo|stainless steel|synthetic bristle|rose gold", "cruelty-free", "vegan",
                     "for sensitive skin|for all skin types", "latex-free", "with storage case"],
        "sizes": ["travel size", "pack of 2", "set of 5", "set of 12"],
    },
    "Shave & Hair Removal": {
        "features": ["for sensitive skin|for coarse hair", "sandalwood scented|menthol|unscented",
                     "5-blade|3-blade", "cordless|rechargeable", "vegan", "with aloe vera"],
        "sizes": ["6 oz", "100 ml", "pack of 4", "pack of 8"],
    },
    "Vitamins & Dietary Supplements": {
        "features": ["vegan|vegetarian", "gluten-free", "non-GMO", "sugar-free", "organic", "third-party tested",
                     "500 mg|1000 mg|2000 IU|5000 IU", "extra strength", "for women|for men|for kids|for seniors",
                     "chewable|time release|liquid"],
        "sizes": ["60 capsules", "120 capsules", "90 tablets", "180 tablets", "60 softgels", "120 softgels",
                  "60 gummies", "8 fl oz"],
    },
    "Sports Nutrition": {
        "features": ["chocolate flavor|vanilla flavor|unflavored|fruit punch flavor", "gluten-free", "non-GMO",
                     "sugar-free", "vegan", "keto-friendly", "grass-fed", "for women|for men"],
        "sizes": ["1 lb", "2 lb", "5 lb", "30 servings", "12 bars", "60 capsules"],
    },
    "Medical Supplies & Equipment": {
        "features": ["latex-free", "adjustable", "FDA cleared", "for arthritis", "waterproof", "rechargeable",
                     "with carrying case", "one size|large|small/medium"],
        "sizes": ["pack of 1", "pack of 2", "100 count", "50 count"],
    },
    "Health Care": {
        "features": ["extra strength|maximum strength", "non-drowsy", "for kids|for adults", "fast acting",
                     "sugar-free", "dye-free", "drug-free", "cherry flavor|mint flavor"],
        "sizes": ["24 caplets", "50 tablets", "100 tablets", "200 count", "4 fl oz", "pack of 2"],
    },
    "Personal Care": {
        "features": ["fluoride-free", "whitening", "for sensitive teeth|for sensitive skin", "mint flavor|cinnamon flavor",
                     "alcohol-free", "aluminum-free", "unscented|fresh scent", "rechargeable", "vegan"],
        "sizes": ["4 oz", "pack of 2", "pack of 4", "6 count"],
    },
    "Household Supplies": {
        "features": ["unscented|lavender scent|lemon scent|fresh linen scent", "eco-friendly", "plant-based",
                     "hypoallergenic", "free & clear", "concentrated"],
        "sizes": ["pack of 6", "pack of 12", "64 loads", "100 count", "32 oz"],
    },
    "Baby & Child Care": {
        "features": ["hypoallergenic", "fragrance-free", "for newborns|size 1|size 3", "organic", "plant-based",
                     "pediatrician recommended"],
        "sizes": ["pack of 3", "80 count", "4 oz", "2 fl oz"],
    },
    "Sexual Wellness": {
        "features": ["latex-free", "water-based|silicone-based", "ultra thin", "lubricated", "vegan",
                     "hormone-free"],
        "sizes": ["12 count", "36 count", "4 oz", "30 capsules"],
    },
}

ROOTS = {"beauty": "Beauty", "health": "Health & Personal Care"}
TREES = {"beauty": BEAUTY_TREE, "health": HEALTH_TREE}
_SUFFIX_WORDS = {"beauty": ["Beauty", "Cosmetics", "Botanicals", "Skin", "Labs", "Naturals", "Paris", "Professional"],
                 "health": ["Health", "Naturals", "Labs", "Nutrition", "Wellness", "Pharma", "Vitamins", "Care"]}
_STEMS = ["Avel", "Bota", "Cal", "Derm", "Elan", "Flor", "Glo", "Hel", "Iri", "Jun", "Kal", "Lum", "Mir", "Nov",
          "Oliv", "Pur", "Quin", "Ros", "Sol", "Ter", "Ull", "Vel", "Wil", "Xen", "Yar", "Zen", "Bel", "Cor", "Dav",
          "Ev", "Fen", "Gra", "Hav", "Iv", "Jas", "Kin", "Lor", "Mon", "Nat", "Orr"]
_ENDINGS = ["ine", "ara", "ique", "ora", "elle", "ix", "on", "ea", "is", "ane", "ova", "ani"]
_LINES = ["Daily", "Pure", "Ultra", "Advanced", "Essentials", "Pro", "Classic", "Gentle", "Intensive", "Natural",
          "Max", "Complete", "Clinical", "Everyday"]
_FIRST_NAMES = ["Mary", "Jennifer", "Linda", "Susan", "Karen", "Lisa", "Emily", "Jessica", "Sarah", "Amanda",
                "Michael", "David", "James", "Robert", "John", "Chris", "Daniel", "Laura", "Nicole", "Rachel",
                "Kim", "Amy", "Angela", "Megan", "Heather", "Brian", "Kevin", "Mark", "Paul", "Anna", "Julie", "Tina"]
_OPENERS = {1: ["Very disappointed with this", "Would not buy this", "Sadly this"],
            2: ["Not impressed by this", "I expected more from this", "Meh,"],
            3: ["This is an okay", "Decent", "Average"],
            4: ["I like this", "Good", "Pretty nice"],
            5: ["I love this", "Best", "Excellent"]}
_CLOSERS = {1: "It did not work for me at all.", 2: "It didn't really work for me.",
            3: "It does the job but nothing special.", 4: "Works well and I would buy it again.",
            5: "Works great, will definitely buy again!"}
_SUMMARIES = {1: ["Terrible", "Waste of money", "Do not buy"], 2: ["Disappointed", "Not for me", "Meh"],
              3: ["It's okay", "Average", "Decent"], 4: ["Nice", "Good product", "Works well"],
              5: ["Love it!", "Five stars", "Holy grail"]}


@dataclass(frozen=True)
class Leaf:
    path: tuple[str, ...]  # root first, 3 or 4 levels
    product_type: str  # the noun used in titles ("Face Moisturizer")

    @property
    def area(self) -> str:
        return self.path[1]


def taxonomy(kind: str) -> list[Leaf]:
    """All leaves of the ``beauty`` or ``health`` taxonomy, in definition order."""
    if kind not in TREES:
        raise ValueError(f"unknown taxonomy {kind!r}; expected one of {sorted(TREES)}")
    root, leaves = ROOTS[kind], []

    def split(entry: str) -> tuple[str, str]:
        name, _, ptype = entry.partition(":")
        return name, ptype or name

    for level2, subtree in TREES[kind].items():
        for level3, level4 in subtree.items():
            name3, ptype3 = split(level3)
            if not level4:
                leaves.append(Leaf((root, level2, name3), ptype3))
            for entry in level4:
                name4, ptype4 = split(entry)
                leaves.append(Leaf((root, level2, name3, name4), ptype4))
    return leaves


def attribute_pool(leaf: Leaf) -> dict[str, list[str]]:
    return ATTRIBUTES.get(f"{leaf.path[1]}/{leaf.path[2]}") or ATTRIBUTES[leaf.path[1]]


def _is_suffix(option: str) -> bool:
    """Attributes that read after the product noun ("for dry skin", "SPF 30", "500 mg") rather than before it."""
    return option.startswith(("for ", "with ", "in ", "SPF", "size ")) or option[0].isdigit()


def _title_case(option: str, keep_first: bool = False) -> str:
    """"fragrance-free" -> "Fragrance-Free"; with keep_first "for dry skin" -> "for Dry Skin"."""
    words = ["-".join(p[:1].upper() + p[1:] for p in w.split("-")) for w in option.split(" ")]
    if keep_first:
        words[0] = option.split(" ")[0]
    return " ".join(words)


# ---------------------------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthConfig:
    """Knobs of the generator. Time-shape knobs are in units of the whole time range (0 = start, 1 = end)."""
    name: str
    category: str  # the <Cat> in the file names
    taxonomy: str  # "beauty" | "health"
    n_users: int
    n_items: int
    n_leaves: int | None = None  # use a random subset of leaves (small presets keep several items per leaf)
    extra_reviews: float = 3.88  # mean reviews per user beyond the 5-core minimum
    count_shape: float = 0.7  # negative-binomial shape of that extra: smaller = heavier tail
    start_growth: float = 1.0  # user arrivals grow like exp(start_growth * t)
    window_median: float = 0.55  # median user activity window (lognormal, truncated at the end of data)
    window_sigma: float = 0.5
    cold_item_frac: float = 0.054  # share of items released after the 70 % cut: the planted strict cold items
    cold_release_span: float = 0.6  # cold items are released within this share of the test period
    first_day: str = "2004-01-01"
    last_day: str = "2014-07-23"
    explore: float = 0.2  # mean chance that a review falls outside the user's taste leaves
    popularity_sigma: float = 0.9  # lognormal item popularity
    leaf_sigma: float = 0.7  # lognormal leaf size / popularity
    decay_days: float = 1000.0  # item appeal halves roughly every 0.7 * decay_days after release
    brand_boost: float = 4.0
    attr_boost: float = 2.0
    items_per_brand: float = 8.0
    extra_meta_frac: float = 0.03  # metadata-only items (never reviewed), like the real meta dumps
    rating_shares: tuple[float, ...] = (0.048, 0.056, 0.11, 0.205, 0.581)  # 1..5 stars, real Beauty mix


PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig("tiny", "Beauty", "beauty", n_users=200, n_items=150, n_leaves=12, cold_item_frac=0.06),
    "small": SynthConfig("small", "Beauty", "beauty", n_users=1_500, n_items=800, n_leaves=40),
    "beauty": SynthConfig("beauty", "Beauty", "beauty", n_users=22_363, n_items=12_101),
    "health": SynthConfig("health", "Health_and_Personal_Care", "health", n_users=38_609, n_items=18_534,
                          # Health users stay longer and arrive less late than Beauty's (Table 3.2: more users
                          # in both splits, fewer cold users), hence the flat arrivals and longer windows
                          extra_reviews=3.95, cold_item_frac=0.05, start_growth=-0.5, window_median=0.75,
                          window_sigma=0.3),
}


@dataclass(frozen=True)
class SynthSummary:
    preset: str
    seed: int
    reviews_path: Path
    meta_path: Path
    truth_path: Path
    n_reviews: int
    n_users: int
    n_items: int  # items with reviews
    n_meta_items: int  # items in the metadata file (reviewed + metadata-only)
    n_cold_items: int  # planted strict cold items (released after the 70 % cut)
    split_unix_time: int  # unixReviewTime of the first test row
    seconds: float = field(default=0.0, compare=False)

    def __str__(self) -> str:
        return (f"{self.n_reviews:,} reviews, {self.n_users:,} users, {self.n_items:,} items, "
                f"{self.n_cold_items:,} cold items, {self.seconds:.1f}s")


# ---------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------
def _ids(rng: np.random.Generator, n: int, prefix: str, length: int) -> list[str]:
    """Unique Amazon-looking ids (``A1B2...`` reviewer ids, ``B00...`` asins)."""
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        codes = alphabet[rng.integers(0, len(alphabet), (n - len(out), length))]
        for row in codes:
            s = prefix + "".join(row)
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out


def _weighted_rows(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One weighted draw per row of a 2-D non-negative weight matrix (every row must have a positive sum)."""
    cum = np.cumsum(weights, axis=1)
    r = rng.random(len(weights)) * cum[:, -1]
    return np.minimum((cum <= r[:, None]).sum(axis=1), weights.shape[1] - 1)


def _brand_names(rng: np.random.Generator, kind: str, n: int) -> list[str]:
    bases = [s + e for s in _STEMS for e in _ENDINGS]
    names = [f"{b} {w}" for b in bases for w in _SUFFIX_WORDS[kind]] + bases
    if n > len(names):
        raise ValueError(f"asked for {n} brands, the name pool has {len(names)}")
    return [names[i] for i in rng.choice(len(names), n, replace=False)]


@dataclass
class _Items:
    leaf: np.ndarray  # leaf index
    brand: np.ndarray  # brand index
    attrs: list[list[str]]  # feature attributes
    size: list[str]
    line: list[str]
    pop: np.ndarray  # base popularity
    quality: np.ndarray  # rating bias
    release: np.ndarray  # release day
    title: list[str]
    description: list[str]


def _make_items(rng, cfg: SynthConfig, leaves: list[Leaf], leaf_pop: np.ndarray, n: int,
                brands: list[str], area_brands: dict[str, np.ndarray]) -> _Items:
    # every leaf gets at least two items (one released on day 0 so early slots always have a choice)
    counts = 2 + rng.multinomial(n - 2 * len(leaves), leaf_pop)
    leaf = np.repeat(np.arange(len(leaves)), counts)
    brand = np.empty(n, dtype=np.int64)
    attrs, size, line, titles, descs = [], [], [], [], []
    for area, idx in area_brands.items():
        in_area = np.nonzero([leaves[l].area == area for l in leaf])[0]
        zipf = 1.0 / np.arange(1, len(idx) + 1) ** 0.8
        brand[in_area] = idx[rng.choice(len(idx), len(in_area), p=zipf / zipf.sum())]
    for i in range(n):
        lf = leaves[leaf[i]]
        pool = attribute_pool(lf)
        groups = pool["features"]
        k = min(len(groups), 1 + rng.binomial(2, 0.5))
        chosen = sorted(rng.choice(len(groups), k, replace=False))
        opts = [groups[g].split("|") for g in chosen]
        a = [o[rng.integers(len(o))] for o in opts]
        attrs.append(a)
        size.append(pool["sizes"][rng.integers(len(pool["sizes"]))])
        line.append(_LINES[rng.integers(len(_LINES))] if rng.random() < 0.5 else "")
        pre = " ".join(_title_case(x) for x in a if not _is_suffix(x))
        post = " ".join(_title_case(x, keep_first=True) for x in a if _is_suffix(x))
        b = brands[brand[i]]
        titles.append(" ".join(x for x in (b, line[-1], pre, lf.product_type, post) if x) + f", {size[-1]}")
        claims = ", ".join(x for x in a if not _is_suffix(x))
        details = " ".join(x for x in a if _is_suffix(x))
        descs.append(
            f"{b} {(line[-1] + ' ').lower() if line[-1] else ''}{lf.product_type.lower()}"
            f"{' ' + details if details else ''}. " + (f"{claims[:1].upper() + claims[1:]}. " if claims else "")
            + f"{size[-1][:1].upper() + size[-1][1:]}.")
    pop = np.exp(cfg.popularity_sigma * rng.standard_normal(n))
    quality = 0.4 * rng.standard_normal(n)
    return _Items(leaf, brand, attrs, size, line, pop, quality, np.zeros(n, dtype=np.int64), titles, descs)


def generate(preset: str, out_dir: Path, seed: int = 0, progress: bool = False) -> SynthSummary:
    """Write ``raw/`` and ``truth/`` of one synthetic dataset under ``out_dir``; deterministic in (preset, seed)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown synth preset {preset!r}; expected one of {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    started = time.perf_counter()
    say = _reporter(progress)
    out_dir = Path(out_dir)
    raw, truth_dir = out_dir / "raw", out_dir / "truth"
    reviews_path = raw / f"reviews_{cfg.category}_5.json.gz"
    meta_path = raw / f"meta_{cfg.category}.json.gz"
    _refuse_foreign_raw(raw, reviews_path, meta_path)
    rng = np.random.default_rng([seed, 20140723])

    # ---- 1. taxonomy, brands ----------------------------------------------------------------------------------
    all_leaves = taxonomy(cfg.taxonomy)
    if cfg.n_leaves and cfg.n_leaves < len(all_leaves):
        keep = np.sort(rng.choice(len(all_leaves), cfg.n_leaves, replace=False))
        leaves = [all_leaves[i] for i in keep]
    else:
        leaves = all_leaves
    n_leaves = len(leaves)
    leaf_pop = np.exp(cfg.leaf_sigma * rng.standard_normal(n_leaves))
    leaf_pop /= leaf_pop.sum()
    areas = sorted({lf.area for lf in leaves})
    n_reviewed = cfg.n_items
    n_extra = int(round(cfg.extra_meta_frac * n_reviewed))
    n_all = n_reviewed + n_extra
    area_share = {a: sum(leaf_pop[j] for j, lf in enumerate(leaves) if lf.area == a) for a in areas}
    n_brands = {a: max(3, int(round(area_share[a] * n_all / cfg.items_per_brand))) for a in areas}
    brands = _brand_names(rng, cfg.taxonomy, sum(n_brands.values()))
    area_brands, start = {}, 0
    for a in areas:
        area_brands[a] = np.arange(start, start + n_brands[a])
        start += n_brands[a]
    say("taxonomy", f"{n_leaves} leaves, {len(brands)} brands")

    # ---- 2. users and their review slots (user, day) ------------------------------------------------------------
    first = dt.date.fromisoformat(cfg.first_day)
    n_days = (dt.date.fromisoformat(cfg.last_day) - first).days
    base_unix = int(dt.datetime(first.year, first.month, first.day, tzinfo=dt.timezone.utc).timestamp())
    U = cfg.n_users
    g = cfg.start_growth
    u = rng.random(U)  # inverse CDF of a density ∝ exp(g t) on [0, 1]
    u_start = np.log1p(u * np.expm1(g)) / g if abs(g) > 1e-9 else u
    u_end = np.minimum(1.0, u_start + np.exp(np.log(cfg.window_median) + cfg.window_sigma * rng.standard_normal(U)))
    p = cfg.count_shape / (cfg.count_shape + cfg.extra_reviews)
    k = MIN_REVIEWS + rng.negative_binomial(cfg.count_shape, p, U)
    slot_user = np.repeat(np.arange(U), k)
    span = (u_end - u_start)[slot_user]
    frac = rng.random(slot_user.size)
    slot_x = u_start[slot_user] + span * frac
    slot_day = np.minimum((slot_x * n_days).astype(np.int64), n_days)
    order = np.lexsort((slot_x, slot_user))  # per user in time order (slots of one user are contiguous)
    slot_user, slot_day, slot_x = slot_user[order], slot_day[order], slot_x[order]
    n_slots = slot_user.size
    cut_day = int(np.sort(slot_day)[int(n_slots * TRAIN_RATIO)])  # day of the first test row
    say("slots", f"{U:,} users, {n_slots:,} review slots, split day {cut_day}/{n_days}")

    # ---- 3. items: leaf, brand, attributes, text, release day -------------------------------------------------
    items = _make_items(rng, cfg, leaves, leaf_pop, n_all, brands, area_brands)
    is_extra = np.zeros(n_all, dtype=bool)
    # the first item of each leaf is released on day 0 and reviewed, so early slots always have a choice
    first_of_leaf = np.r_[True, items.leaf[1:] != items.leaf[:-1]]
    is_extra[rng.choice(np.nonzero(~first_of_leaf)[0], n_extra, replace=False)] = True
    # planted cold items: released after the cut day
    eligible = np.nonzero(~first_of_leaf & ~is_extra)[0]
    n_cold = int(round(cfg.cold_item_frac * n_reviewed))
    cold = np.zeros(n_all, dtype=bool)
    cold[rng.choice(eligible, n_cold, replace=False)] = True
    test_days = n_days - cut_day
    release = np.empty(n_all, dtype=np.int64)
    release[cold] = cut_day + 1 + (rng.random(n_cold) * cfg.cold_release_span * test_days).astype(np.int64)
    warm = ~cold
    # warm items follow the review-time distribution (catalogue grows with the site), a little ahead of it
    pre_cut = np.sort(slot_day[slot_day < cut_day - 7])
    lead = rng.exponential(0.05 * n_days, warm.sum())
    release[warm] = np.maximum(0, pre_cut[rng.integers(0, len(pre_cut), warm.sum())] - lead).astype(np.int64)
    release[first_of_leaf] = 0
    items.release = release
    say("items", f"{n_all:,} items ({n_cold} planted cold, {n_extra} metadata-only)")

    # ---- 4. user tastes ------------------------------------------------------------------------------------------
    leaf_of_area = {a: np.array([j for j, lf in enumerate(leaves) if lf.area == a]) for a in areas}
    vocab = sorted({o for lf in leaves for grp in attribute_pool(lf)["features"] for o in grp.split("|")})
    attr_id = {a: i for i, a in enumerate(vocab)}
    item_attr = np.zeros((n_all, len(vocab) + 1), dtype=np.int8)  # last column: padding, always 0
    for i, a in enumerate(items.attrs):
        item_attr[i, [attr_id[x] for x in a]] = 1
    LMAX, BMAX, AMAX = 6, 3, 3
    t_leaf = np.full((U, LMAX), -1, dtype=np.int64)
    t_w0 = np.zeros((U, LMAX))
    t_w1 = np.zeros((U, LMAX))
    t_brand = np.full((U, BMAX), -1, dtype=np.int64)
    t_attr = np.full((U, AMAX), len(vocab), dtype=np.int64)
    explore = rng.beta(2.0, 2.0 * (1 - cfg.explore) / cfg.explore, U)
    area_p = np.array([area_share[a] for a in areas])
    reviewed_items = np.nonzero(~is_extra)[0]
    items_of_leaf = [reviewed_items[items.leaf[reviewed_items] == j] for j in range(n_leaves)]
    attrs_of_leaf = [sorted({attr_id[x] for i in items_of_leaf[j] for x in items.attrs[i]}) for j in range(n_leaves)]
    for u in range(U):
        area = areas[rng.choice(len(areas), p=area_p)]
        cand = leaf_of_area[area]
        n_taste = min(len(cand), 1 + rng.poisson(1.0), LMAX - 1)
        lp = leaf_pop[cand] / leaf_pop[cand].sum()
        chosen = list(rng.choice(cand, n_taste, replace=False, p=lp))
        w0 = list(rng.dirichlet(np.ones(n_taste)))
        w1 = list(rng.dirichlet(np.ones(n_taste)))
        if rng.random() < 0.5:  # drift: a leaf that only grows in over the user's window
            other = [j for j in range(n_leaves) if j not in chosen]
            op = leaf_pop[other] / leaf_pop[other].sum()
            chosen.append(other[rng.choice(len(other), p=op)])
            w0.append(0.0)
            w1 = [w * 0.6 for w in w1] + [0.4]
        m = len(chosen)
        t_leaf[u, :m], t_w0[u, :m], t_w1[u, :m] = chosen, w0, w1
        pool = np.concatenate([items_of_leaf[j] for j in chosen])
        pb = items.pop[pool] / items.pop[pool].sum()
        fav = np.unique(items.brand[pool[rng.choice(len(pool), 1 + rng.binomial(2, 0.4), p=pb)]])
        t_brand[u, :len(fav)] = fav
        opts = sorted(set().union(*(attrs_of_leaf[j] for j in chosen)))
        if opts:
            likes = rng.choice(opts, min(len(opts), 1 + rng.binomial(2, 0.5)), replace=False)
            t_attr[u, :len(likes)] = likes
    say("users", "tastes drawn")

    # ---- 5. leaf per slot, then item per slot -------------------------------------------------------------------
    lam = np.clip((slot_x - u_start[slot_user]) / np.maximum(u_end - u_start, 1e-9)[slot_user], 0, 1)
    w = (1 - lam)[:, None] * t_w0[slot_user] + lam[:, None] * t_w1[slot_user]
    slot_leaf = t_leaf[slot_user, _weighted_rows(rng, w)]
    roam = rng.random(n_slots) < explore[slot_user]
    slot_leaf[roam] = rng.choice(n_leaves, roam.sum(), p=leaf_pop)
    slot_item = np.empty(n_slots, dtype=np.int64)

    def item_weights(slots: np.ndarray, cands: np.ndarray) -> np.ndarray:
        """Appeal of candidate items (columns) for review slots (rows): popularity × recency × affinity."""
        age = slot_day[slots][:, None] - items.release[cands][None, :]
        wgt = items.pop[cands][None, :] * np.exp(-np.maximum(age, 0) / cfg.decay_days) * (age >= 0)
        users = slot_user[slots]
        fav = (items.brand[cands][None, :, None] == t_brand[users][:, None, :]).any(axis=2)
        overlap = item_attr[cands][:, t_attr[users]].sum(axis=2).T  # (slots, cands)
        return wgt * np.where(fav, cfg.brand_boost, 1.0) * cfg.attr_boost ** overlap

    by_leaf = np.argsort(slot_leaf, kind="stable")
    bounds = np.searchsorted(slot_leaf[by_leaf], np.arange(n_leaves + 1))
    for j in range(n_leaves):
        slots_j = by_leaf[bounds[j]:bounds[j + 1]]
        cands = items_of_leaf[j]
        for c in range(0, len(slots_j), 2048):
            chunk = slots_j[c:c + 2048]
            slot_item[chunk] = cands[_weighted_rows(rng, item_weights(chunk, cands))]
    # one review per (user, item): redraw repeats sequentially, excluding what the user already has
    user_items: list[set[int]] = [set() for _ in range(U)]
    for s in range(n_slots):
        u, i = slot_user[s], slot_item[s]
        if i in user_items[u]:
            cands = items_of_leaf[slot_leaf[s]]
            wgt = item_weights(np.array([s]), cands)[0]
            wgt[[n for n, c in enumerate(cands) if c in user_items[u]]] = 0.0
            if wgt.sum() <= 0:  # the user has every released item of that leaf: any released item elsewhere
                cands = reviewed_items[(items.release[reviewed_items] <= slot_day[s])]
                cands = np.array([c for c in cands if c not in user_items[u]])
                wgt = items.pop[cands]
            i = cands[rng.choice(len(cands), p=wgt / wgt.sum())]
            slot_item[s] = i
        user_items[u].add(int(i))
    say("reviews", "items drawn")

    # ---- 6. repair: >= 5 reviews per item; every warm item has a training review ------------------------------
    _repair(rng, slot_user, slot_day, slot_item, user_items, items, reviewed_items, cold, cut_day, n_leaves)
    say("repair", "5-core and cold-item invariants enforced")

    # ---- 7. ratings -----------------------------------------------------------------------------------------
    in_taste = (t_leaf[slot_user] == items.leaf[slot_item][:, None]).any(axis=1)
    brand_fav = (t_brand[slot_user] == items.brand[slot_item][:, None]).any(axis=1)
    overlap = item_attr[slot_item[:, None], t_attr[slot_user]].sum(axis=1)
    user_bias = 0.4 * rng.standard_normal(U)
    score = (1.2 * in_taste + 0.8 * brand_fav + 0.5 * overlap + user_bias[slot_user] + items.quality[slot_item]
             + rng.logistic(0.0, 0.6, n_slots))
    cuts = np.quantile(score, np.cumsum(cfg.rating_shares)[:-1])
    rating = 1 + np.searchsorted(cuts, score, side="right")
    say("ratings", f"mean {rating.mean():.2f}, >=3: {100 * (rating >= 3).mean():.1f}%")

    # ---- 8. write ------------------------------------------------------------------------------------------
    user_ids = _ids(rng, U, "A", 13)
    asins = _ids(rng, n_all, "B00", 7)
    unix = base_unix + slot_day * DAY
    raw.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    _write_reviews(rng, reviews_path, slot_user, slot_item, rating, unix, user_ids, asins, items, leaves)
    _write_meta(rng, meta_path, cfg, asins, items, leaves, brands)
    order = np.lexsort((np.array(asins)[slot_item], np.array(user_ids)[slot_user], unix))
    split_unix = int(unix[order[int(n_slots * TRAIN_RATIO)]])
    truth = {
        "preset": cfg.name, "seed": seed, "category": cfg.category, "root": ROOTS[cfg.taxonomy],
        "train_ratio": TRAIN_RATIO, "split_unix_time": split_unix,
        "leaves": [{"path": list(lf.path), "product_type": lf.product_type} for lf in leaves],
        "items": {asins[i]: {
            "leaf": list(leaves[items.leaf[i]].path), "product_type": leaves[items.leaf[i]].product_type,
            "brand": brands[items.brand[i]], "attributes": items.attrs[i], "size": items.size[i],
            "release_unix_time": int(base_unix + items.release[i] * DAY), "cold": bool(cold[i]),
            "reviewed": not bool(is_extra[i]), "popularity": round(float(items.pop[i]), 4),
            "quality": round(float(items.quality[i]), 4)} for i in range(n_all)},
        "users": {user_ids[u]: {
            "leaves": [list(leaves[j].path) for j in t_leaf[u] if j >= 0],
            "leaf_weights_start": [round(float(x), 4) for x, j in zip(t_w0[u], t_leaf[u]) if j >= 0],
            "leaf_weights_end": [round(float(x), 4) for x, j in zip(t_w1[u], t_leaf[u]) if j >= 0],
            "brands": [brands[b] for b in t_brand[u] if b >= 0],
            "attributes": [vocab[a] for a in t_attr[u] if a < len(vocab)],
            "explore": round(float(explore[u]), 4), "bias": round(float(user_bias[u]), 4),
            "window_unix_time": [int(base_unix + int(u_start[u] * n_days) * DAY),
                                 int(base_unix + int(u_end[u] * n_days) * DAY)]} for u in range(U)},
    }
    truth_path = truth_dir / "truth.json.gz"
    with _gzip_writer(truth_path) as fh:
        fh.write(json.dumps(truth, sort_keys=True, separators=(",", ":")).encode())
    summary = SynthSummary(cfg.name, seed, reviews_path, meta_path, truth_path, n_slots, U, n_reviewed, n_all,
                           n_cold, split_unix, time.perf_counter() - started)
    say("done", str(summary))
    return summary


def _repair(rng, slot_user, slot_day, slot_item, user_items, items: _Items, reviewed_items, cold, cut_day,
            n_leaves) -> None:
    """Move review slots so every reviewed item has >= 5 reviews and every warm item one training review.

    A slot is only moved from an item that keeps >= 5 reviews, to an item released by that slot's day that
    the user has not reviewed; slots of the same leaf are preferred, so the move stays taste-plausible.
    Users, days and therefore the time split are unchanged.
    """
    counts = np.bincount(slot_item, minlength=len(items.leaf))
    train_counts = np.bincount(slot_item[slot_day < cut_day], minlength=len(items.leaf))
    slot_leaf = items.leaf[slot_item]
    leaf_slots = [np.nonzero(slot_leaf == j)[0] for j in range(n_leaves)]
    everything = np.arange(len(slot_item))

    def move(i: int, pools: list[np.ndarray], need: int, before: int | None) -> int:
        for pool in pools:
            ok = (slot_day[pool] >= items.release[i]) & (counts[slot_item[pool]] > MIN_REVIEWS)
            if before is not None:
                ok &= slot_day[pool] < before
            for s in rng.permutation(pool[ok]):
                if need == 0:
                    return 0
                u, old = slot_user[s], slot_item[s]
                if i in user_items[u] or counts[old] <= MIN_REVIEWS:
                    continue
                is_train = slot_day[s] < cut_day
                if is_train and not cold[old] and train_counts[old] <= 1:
                    continue  # never take a warm item's only training review
                user_items[u].discard(int(old))
                user_items[u].add(int(i))
                slot_item[s] = i
                counts[old] -= 1
                counts[i] += 1
                train_counts[old] -= is_train
                train_counts[i] += is_train
                need -= 1
            if need == 0:
                return 0
        return need

    for i in reviewed_items[counts[reviewed_items] < MIN_REVIEWS]:
        left = move(int(i), [leaf_slots[items.leaf[i]], everything], MIN_REVIEWS - counts[i], None)
        if left:
            raise RuntimeError(f"synth: cannot give item {i} {MIN_REVIEWS} reviews; the preset is too small")
    for i in reviewed_items[~cold[reviewed_items] & (train_counts[reviewed_items] == 0)]:
        if move(int(i), [leaf_slots[items.leaf[i]], everything], 1, cut_day):
            raise RuntimeError(f"synth: cannot give warm item {i} a training review")


class _gzip_writer:
    """gzip with mtime=0 and no file name in the header, so equal content gives byte-identical files."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self):
        self._raw = open(self.path, "wb")
        self._gz = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=6)
        return self._gz

    def __exit__(self, *exc):
        self._gz.close()
        self._raw.close()


def _review_time(unix: int) -> str:
    d = dt.datetime.fromtimestamp(unix, dt.timezone.utc)
    return f"{d.month:02d} {d.day}, {d.year}"


def _write_reviews(rng, path, slot_user, slot_item, rating, unix, user_ids, asins, items: _Items, leaves) -> None:
    """JSON lines with the 2014 keys and key order; file ordered by asin, then reviewer, like the real dump."""
    n = len(slot_user)
    names = [f"{_FIRST_NAMES[a]} {chr(65 + b)}." for a, b in zip(
        rng.integers(0, len(_FIRST_NAMES), len(user_ids)), rng.integers(0, 26, len(user_ids)))]
    pick = rng.integers(0, 3, (n, 2))
    aids = np.array(asins)
    uids = np.array(user_ids)
    order = np.lexsort((uids[slot_user], aids[slot_item]))
    with _gzip_writer(path) as fh:
        for s in order:
            u, i, r = int(slot_user[s]), int(slot_item[s]), int(rating[s])
            ptype = leaves[items.leaf[i]].product_type.lower()
            said = items.attrs[i][pick[s, 0] % len(items.attrs[i])] if items.attrs[i] else ""
            attr = (f" I chose it {said}." if _is_suffix(said) else f" I chose it because it is {said}.") if said else ""
            rec = {"reviewerID": user_ids[u], "asin": asins[i], "reviewerName": names[u], "helpful": [0, 0],
                   "reviewText": f"{_OPENERS[r][pick[s, 0]]} {ptype}.{attr} {_CLOSERS[r]}",
                   "overall": float(r), "summary": _SUMMARIES[r][pick[s, 1]],
                   "unixReviewTime": int(unix[s]), "reviewTime": _review_time(int(unix[s]))}
            fh.write((json.dumps(rec) + "\n").encode())


def _write_meta(rng, path, cfg: SynthConfig, asins, items: _Items, leaves, brands) -> None:
    """One ``repr(dict)`` per line (Python literal, single quotes), keys as in the 2014 metadata dump."""
    n = len(asins)
    root = ROOTS[cfg.taxonomy]
    rank = np.argsort(np.argsort(-items.pop * np.exp(0.5 * rng.standard_normal(n)))) * 7 + rng.integers(1, 7, n)
    price = np.round(np.exp(np.log(15.0) + 0.7 * rng.standard_normal(n)), 2)
    has_price, has_rank, has_desc = rng.random(n) < 0.85, rng.random(n) < 0.9, rng.random(n) < 0.92
    second = rng.random(n) < 0.15
    img = _ids(rng, n, "", 10)
    with _gzip_writer(path) as fh:
        for i in np.argsort(np.array(asins)):
            path_ = list(leaves[items.leaf[i]].path)
            cats = [path_]
            if second[i]:  # a shorter second chain, as real items are often cross-listed; the longest is the path
                cats.append(path_[:2] if len(path_) > 2 else [root])
            rec: dict = {"asin": asins[i]}
            if has_desc[i]:
                rec["description"] = items.description[i]
            rec["title"] = items.title[i]
            rec["imUrl"] = f"http://ecx.images-amazon.com/images/I/{img[i]}.jpg"
            if has_rank[i]:
                rec["salesRank"] = {root: int(rank[i])}
            rec["categories"] = cats
            if has_price[i]:
                rec["price"] = float(price[i])
            rec["brand"] = brands[items.brand[i]]
            fh.write((repr(rec) + "\n").encode())


def _refuse_foreign_raw(raw: Path, reviews_path: Path, meta_path: Path) -> None:
    """A workspace holds one dataset: never mix synthetic files with another category's (or real) raw files."""
    if not raw.is_dir():
        return
    for p in raw.iterdir():
        if p.name.endswith(("_5.json", "_5.json.gz")) and p != reviews_path:
            raise FileExistsError(f"{raw} already holds another reviews file ({p.name}); "
                                  f"use another workspace (--dataset) or remove it")
        if p.name.startswith("meta_") and p != meta_path:
            raise FileExistsError(f"{raw} already holds another metadata file ({p.name}); "
                                  f"use another workspace (--dataset) or remove it")


def _reporter(enabled: bool):
    if not enabled:
        return lambda stage, detail="": None
    from rich.console import Console

    console, t0 = Console(stderr=True), time.perf_counter()
    return lambda stage, detail="": console.print(f"[cyan]{time.perf_counter() - t0:6.1f}s[/] {stage:<9} {detail}")


def main() -> None:  # python -m retrieval.synth PRESET OUT [SEED]
    import sys

    args = sys.argv[1:]
    if len(args) not in (2, 3):
        raise SystemExit("usage: python -m retrieval.synth PRESET OUT_DIR [SEED]")
    print(generate(args[0], Path(args[1]), int(args[2]) if len(args) == 3 else 0, progress=True))


if __name__ == "__main__":
    main()
