//! A person's baskets, carts and checkouts: sessions that end in an order or an abandonment.

use super::*;

impl Gen<'_> {
    fn basket(&mut self, whale: bool, t: Ts) -> Basket {
        // With a catalogue, only what is on sale at `t`, at `t`'s price.
        let on_sale = self
            .catalog
            .map(|c| c.sellable_at(t))
            .filter(|v| !v.is_empty());
        let pres = if self.chance(self.cfg.multi_currency_fraction) {
            FOREIGN_CURRENCIES[self.rng.random_range(0..FOREIGN_CURRENCIES.len())]
        } else {
            Pres {
                code: "",
                rate_milli: 1000,
            }
        };
        let discount_code = self
            .chance(self.cfg.discount_fraction)
            .then_some("WELCOME10");
        let n_lines = if whale {
            self.rng.random_range(2..=5)
        } else {
            self.rng.random_range(1..=3)
        };
        let mut lines: Vec<Line> = Vec::new();
        for _ in 0..n_lines {
            let product = match &on_sale {
                Some(v) => v[self.rng.random_range(0..v.len())],
                None => self.rng.random_range(0..self.cat.len()),
            };
            if lines.iter().any(|l| l.product == product) {
                continue;
            }
            let quantity = if self.chance(0.25) {
                self.rng.random_range(2..=3)
            } else {
                1
            };
            let unit = match self.catalog.and_then(|c| c.variant_at(product, t)) {
                Some((_, v)) => v.price,
                None => self.cat.get(product).map_or(1000, |p| p.price),
            };
            let price = Amt::new(unit, pres.convert(unit));
            let q = i64::from(quantity);
            let gross = Amt::new(price.shop * q, price.pres * q);
            let discount = if discount_code.is_some() {
                Amt::new(round_div(gross.shop, 10), round_div(gross.pres, 10))
            } else {
                Amt::default()
            };
            let net = gross.sub(discount);
            let tax = Amt::new(
                round_div(net.shop * TAX_BP, 10_000),
                round_div(net.pres * TAX_BP, 10_000),
            );
            lines.push(Line {
                id: self.id(),
                product,
                quantity,
                price,
                discount,
                tax,
            });
        }
        let mut basket = Basket {
            lines,
            shipping: Amt::default(),
            discount_code,
            pres,
        };
        if basket.subtotal().shop < FREE_SHIPPING_CENTS {
            basket.shipping = Amt::new(SHIPPING_CENTS, pres.convert(SHIPPING_CENTS));
        }
        basket
    }

    /// Optional `carts/create` + `carts/update`; returns the cart token and the time the
    /// checkout starts.
    fn maybe_cart(&mut self, t: Ts, basket: &Basket) -> (String, Ts) {
        let token = self.hex_token();
        if !self.chance(self.cfg.cart_fraction) {
            return (token, t);
        }
        let mut cart = Cart {
            token: token.clone(),
            created_at: t,
            updated_at: t,
            lines: basket.lines.iter().take(1).cloned().collect(),
        };
        let g = self.group();
        self.emit(
            t,
            Topic::CartsCreate,
            Subject::Cart(Box::new(cart.clone())),
            g,
        );
        let t2 = t + self.mins(1, 5);
        cart.updated_at = t2;
        cart.lines = basket.lines.clone();
        let g = self.group();
        self.emit(t2, Topic::CartsUpdate, Subject::Cart(Box::new(cart)), g);
        (token, t2 + self.mins(1, 8))
    }

    fn new_checkout(
        &mut self,
        t: Ts,
        basket: Basket,
        cart_token: String,
        email: Option<String>,
    ) -> Checkout {
        let customer = self.snapshot(t);
        let phone = customer.as_ref().and_then(|c| c.phone.clone());
        Checkout {
            id: self.id(),
            token: self.hex_token(),
            cart_token,
            email,
            phone,
            customer,
            created_at: t,
            updated_at: t,
            completed_at: None,
            basket,
            buyer_accepts_marketing: false,
            shipping_address: None,
        }
    }

    fn emit_checkout(&mut self, topic: Topic, co: &Checkout) -> u64 {
        let g = self.group();
        self.emit(
            co.updated_at,
            topic,
            Subject::Checkout(Box::new(co.clone())),
            g,
        );
        g
    }

    /// Create a checkout, then 1–2 updates (contact/shipping step). Returns the truth
    /// record so far.
    fn checkout_steps(
        &mut self,
        co: &mut Checkout,
        email_on_update: Option<String>,
        first: &str,
        last: &str,
    ) -> CheckoutTruth {
        self.emit_checkout(Topic::CheckoutsCreate, co);
        let mut truth = CheckoutTruth {
            token: co.token.clone(),
            updates: vec![co.created_at],
            completed_at: None,
            deleted_at: None,
            contact: co.email.is_some() || co.phone.is_some(),
        };
        let t = co.updated_at + self.mins(1, 6);
        if let Some(e) = email_on_update {
            co.email = Some(e);
        }
        co.shipping_address = Some(self.address(first, last, co.phone.clone()));
        co.buyer_accepts_marketing = self.chance(0.4);
        co.updated_at = t;
        self.emit_checkout(Topic::CheckoutsUpdate, co);
        truth.updates.push(t);
        truth.contact = co.email.is_some() || co.phone.is_some();
        if self.chance(0.5) {
            co.updated_at = t + self.mins(1, 4);
            self.emit_checkout(Topic::CheckoutsUpdate, co);
            truth.updates.push(co.updated_at);
        }
        truth
    }

    /// Complete a checkout at `t`: `checkouts/update` with `completed_at`, then the order.
    fn complete(&mut self, co: &mut Checkout, truth: &mut CheckoutTruth, t: Ts) {
        if t >= self.end {
            return;
        }
        co.completed_at = Some(t);
        co.updated_at = t;
        let g = self.emit_checkout(Topic::CheckoutsUpdate, co);
        truth.completed_at = Some(t);
        truth.updates.push(t);
        self.place_order(t, co, g);
    }

    fn abandon_followups(&mut self, truth: &mut CheckoutTruth, co: &Checkout) {
        if self.chance(self.cfg.checkout_delete_fraction) {
            let at = co.updated_at + self.mins(10, 600);
            if at < self.end {
                let g = self.group();
                self.emit(
                    at,
                    Topic::CheckoutsDelete,
                    Subject::Checkout(Box::new(co.clone())),
                    g,
                );
                truth.deleted_at = Some(at);
            }
        }
    }

    pub(super) fn registered_session(&mut self, t0: Ts) {
        // Not logged in: the same person and email, no customer object (the truth is still the
        // customer's: tillstream must bring the guest checkout and order to the customer key).
        self.as_guest = self.chance(self.cfg.registered_guest_checkout_fraction);
        self.registered_checkout(t0);
        self.as_guest = false;
    }

    fn registered_checkout(&mut self, t0: Ts) {
        let Some(c) = self.customer.clone() else {
            return;
        };
        let whale = c.tags.contains(&"vip");
        let basket = self.basket(whale, t0);
        let (cart, t) = self.maybe_cart(t0, &basket);
        let mut co = self.new_checkout(t, basket, cart, Some(c.email.clone()));
        let mut truth = self.checkout_steps(&mut co, None, &c.first_name, &c.last_name);
        if !self.chance(self.cfg.abandonment_fraction) {
            let done = co.updated_at + self.mins(2, 10);
            self.complete(&mut co, &mut truth, done);
            self.truth.checkouts.push(truth);
            return;
        }
        self.abandon_followups(&mut truth, &co);
        let last_update = co.updated_at;
        self.truth.checkouts.push(truth);
        if self.chance(self.cfg.order_after_abandon_fraction) {
            // A second checkout that converts before the first one's abandonment is due.
            let t2 = last_update + self.mins(5, 25);
            let basket = self.basket(whale, t2);
            let cart = self.hex_token();
            let mut co2 = self.new_checkout(t2, basket, cart, Some(c.email.clone()));
            let mut truth2 = self.checkout_steps(&mut co2, None, &c.first_name, &c.last_name);
            let done = co2.updated_at + self.mins(1, 5);
            self.complete(&mut co2, &mut truth2, done);
            self.truth.checkouts.push(truth2);
        }
    }

    pub(super) fn guest_session(&mut self, t0: Ts, email: &str, first: &str, last: &str) {
        let basket = self.basket(false, t0);
        let (cart, t) = self.maybe_cart(t0, &basket);
        // Guests reach the contact step only after checkout creation.
        let mut co = self.new_checkout(t, basket, cart, None);
        let abandon = self.chance(self.cfg.abandonment_fraction);
        if abandon && self.chance(self.cfg.no_contact_fraction) {
            self.emit_checkout(Topic::CheckoutsCreate, &co);
            let mut truth = CheckoutTruth {
                token: co.token.clone(),
                updates: vec![co.created_at],
                completed_at: None,
                deleted_at: None,
                contact: false,
            };
            self.abandon_followups(&mut truth, &co);
            self.unattributed.push(truth);
            return;
        }
        let mut truth = self.checkout_steps(&mut co, Some(email.to_owned()), first, last);
        if !abandon {
            let done = co.updated_at + self.mins(2, 10);
            self.complete(&mut co, &mut truth, done);
        } else if self.chance(self.cfg.guest_complete_later_fraction) {
            // Recovered days later (after the abandonment was due).
            let done = co.updated_at + self.days(1, 3);
            self.complete(&mut co, &mut truth, done);
        } else {
            self.abandon_followups(&mut truth, &co);
        }
        self.truth.checkouts.push(truth);
    }
}
